using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using AsyncIterTools;
using AsyncPrimitives.Postgres.Tests.Support;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// <see cref="PostgresQueue{T}.GetAllAsync"/>: deliveries one after another that only their work completes, also under
/// operators that read ahead or run several at once; it ends when the queue is shut down and drained. And a delivery
/// nothing references any more is no longer renewed, so its item comes back.
/// </summary>
public sealed class QueueGetAllTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task GetAllAsync_CompletesNothingItself_AndEndsWhenShutDownAndDrained()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2, 3]);
        await queue.ShutdownAsync();

        var deliveries = new List<PostgresDelivery<int>>();
        await foreach (PostgresDelivery<int> delivery in queue.GetAllAsync())
        {
            deliveries.Add(delivery);
        }

        deliveries.Select(d => d.Item).Should().Equal(1, 2, 3);
        (await queue.UnfinishedAsync()).Should().Be(3, "asking for the next delivery completes none before it");
        await queue.CompleteManyAsync(deliveries);
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task GetAllAsync_UnderMapUnordered_WithAFailingBody_CompletesExactlyWhatTheWorkCompleted()
    {
        Member a = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(3)); // a dropped delivery comes back soon
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        int[] items = [.. Enumerable.Range(1, 12)];
        await queue.PutManyAsync(items);
        var completedByWork = new ConcurrentBag<int>();
        var failure = new InvalidOperationException("item 5 failed");

        Func<Task> run = async () =>
        {
            await foreach (int _ in queue.GetAllAsync().MapUnordered(
                async (delivery, ct) =>
                {
                    await using (delivery)
                    {
                        await Task.Yield();
                        if (delivery.Item == 5)
                        {
                            throw failure;
                        }

                        await delivery.CompleteAsync(ct);
                        completedByWork.Add(delivery.Item);
                        return delivery.Item;
                    }
                },
                maxConcurrency: 4))
            {
            }
        };

        (await run.Should().ThrowAsync<InvalidOperationException>()).Which.Should().BeSameAs(failure);

        // Every item is either completed by its own work or back in line (none completed unprocessed, none lost). The
        // get in flight when the pipeline failed may have taken an item (the one given back, even) that the operator
        // then dropped: it is no longer renewed once the garbage collector finds it, and comes back when its lease expires.
        await Task.Yield(); // off the stack of the last completion, which may still hold what it returned
        GC.Collect();
        GC.WaitForPendingFinalizers();
        List<int> left = [];
        while (completedByWork.Count + left.Count < items.Length)
        {
            await using PostgresDelivery<int> delivery = await queue.GetAsync(TimeSpan.FromSeconds(20));
            left.Add(delivery.Item);
            await delivery.CompleteAsync();
        }

        left.Should().Contain(5, "the failing body's delivery was given back, not completed");
        completedByWork.Should().OnlyHaveUniqueItems().And.NotContain(left);
        completedByWork.Concat(left).Should().BeEquivalentTo(items);
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task ADeliveryNothingReferences_IsNoLongerRenewed_AndItsItemComesBack()
    {
        Member a = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(1)); // renewed every third of a second while referenced
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(7);

        WeakReference dropped = await TakeAndDropAsync(queue);
        await Task.Yield(); // off the stack of the get's completion, which still holds what the get returned
        for (int i = 0; i < 10 && dropped.IsAlive; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }

        dropped.IsAlive.Should().BeFalse("the test must drop every reference to the delivery");
        await using PostgresDelivery<int> again = await queue.GetAsync(TimeSpan.FromSeconds(20));
        again.Item.Should().Be(7);
        again.Attempt.Should().Be(2);
    }

    /// <summary>Takes the item and drops the delivery without settling it, as an operator that read it ahead and then
    /// stopped would.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<WeakReference> TakeAndDropAsync(PostgresQueue<int> queue)
    {
        PostgresDelivery<int>? delivery = await queue.GetAsync(TimeSpan.FromSeconds(5));
        var weak = new WeakReference(delivery);
        delivery = null;
        return weak;
    }
}
