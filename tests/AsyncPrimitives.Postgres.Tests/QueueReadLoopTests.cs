using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// <see cref="PostgresQueue{T}.ReadAllAsync"/>: each delivery is completed by the call that takes the next item, unless
/// the loop's body settled it; leaving the body early gives it back; a lost lease is refused and takes nothing; the loop
/// ends when the queue is shut down and drained.
/// </summary>
public sealed class QueueReadLoopTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task ReadAllAsync_WhoseDeliveryAnImmediateShutdownDropped_Ends_AfterItsLostHasFired()
    {
        var time = new CountingTimeProvider();
        Member a = await JoinAsync(o => o.TimeProvider = time);
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);
        var seen = new List<int>();

        await foreach (PostgresDelivery<int> delivery in queue.ReadAllAsync())
        {
            seen.Add(delivery.Item);
            await queue.ShutdownAsync(immediate: true);
            await AdvanceUntilLostAsync(time, delivery.Lost);
        }

        seen.Should().Equal(1);
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task ReadAllAsync_CompletesEachDelivery_WhenTheLoopAsksForTheNext_AndEndsWhenShutDownAndDrained()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2, 3]);
        await queue.ShutdownAsync();

        var read = new List<(int Item, long Unfinished)>();
        var deliveries = new List<PostgresDelivery<int>>();
        await foreach (PostgresDelivery<int> delivery in queue.ReadAllAsync())
        {
            read.Add((delivery.Item, await queue.UnfinishedAsync()));
            deliveries.Add(delivery);
        }

        read.Should().Equal([(1, 3), (2, 2), (3, 1)], "the delivery before the current one was completed by the call that took it");
        (await queue.UnfinishedAsync()).Should().Be(0, "the last delivery was completed by the call that found the queue shut down and empty");
        deliveries.Select(d => d.ToString()).Should().AllSatisfy(s => s.Should().EndWith("completed)"));
        await FluentActions.Awaiting(async () => await queue.GetAsync(TimeSpan.Zero)).Should().ThrowAsync<QueueShutDownException>();
    }

    [PostgresFact]
    public async Task ReadAllAsync_LeavesADeliveryTheBodySettled_AsTheBodyLeftIt()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);

        var seen = new List<(int Item, int Attempt)>();
        await foreach (PostgresDelivery<int> delivery in queue.ReadAllAsync())
        {
            seen.Add((delivery.Item, delivery.Attempt));
            if (delivery.Item == 1 && delivery.Attempt == 1)
            {
                await delivery.AbandonAsync(); // back in line, in its place: first
            }
            else
            {
                await delivery.CompleteAsync();
            }

            if (seen.Count == 3)
            {
                break;
            }
        }

        seen.Should().Equal([(1, 1), (1, 2), (2, 1)], "the abandoned delivery was not completed by the loop");
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task LeavingTheBodyEarly_GivesTheDeliveryBack_AtOnce(bool throwInBody)
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);

        Func<Task> loop = async () =>
        {
            await foreach (PostgresDelivery<int> delivery in queue.ReadAllAsync())
            {
                if (delivery.Item == 2)
                {
                    if (throwInBody)
                    {
                        throw new InvalidOperationException("the work failed");
                    }

                    break;
                }
            }
        };

        if (throwInBody)
        {
            await loop.Should().ThrowAsync<InvalidOperationException>().WithMessage("the work failed");
        }
        else
        {
            await loop();
        }

        (await queue.UnfinishedAsync()).Should().Be(1, "item 1 was completed when the loop took item 2");
        await using PostgresDelivery<int> again = await queue.GetAsync(TimeSpan.Zero);
        again.Item.Should().Be(2);
        again.Attempt.Should().Be(2, "the loop gave item 2 back when it left");
    }

    [PostgresFact]
    public async Task ALeaseLostOnTheServer_IsRefused_AndTheCallTakesNothing()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);

        await using IAsyncEnumerator<PostgresDelivery<int>> reader = queue.ReadAllAsync().GetAsyncEnumerator();
        (await reader.MoveNextAsync()).Should().BeTrue();
        PostgresDelivery<int> first = reader.Current;
        await ExpireOnServerAsync(first);

        await FluentActions.Awaiting(async () => await reader.MoveNextAsync()).Should().ThrowAsync<PostgresLeaseLostException>();
        await WaitForLostAsync(first.Lost);
        (await queue.CountAsync()).Should().Be(2, "item 1 is back in line once its expiry is seen, and item 2 was not taken");
        (await queue.UnfinishedAsync()).Should().Be(2, "nothing was completed");
    }

    [PostgresTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ABodyThatGivesBackItsLostDelivery_LeavesTheLoopTakingTheNext(bool dispose)
    {
        var time = new CountingTimeProvider();
        Member a = await JoinAsync(o => o.TimeProvider = time);
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);

        await using IAsyncEnumerator<PostgresDelivery<int>> reader = queue.ReadAllAsync().GetAsyncEnumerator();
        (await reader.MoveNextAsync()).Should().BeTrue();
        PostgresDelivery<int> first = reader.Current;
        await ExpireOnServerAsync(first);
        await AdvanceUntilLostAsync(time, first.Lost); // the heartbeat has seen the loss: the body stops its work

        // The body gives the delivery back (a no-op on the server for a lost lease): the loop only takes the next item.
        if (dispose)
        {
            await first.DisposeAsync();
        }
        else
        {
            await first.AbandonAsync();
        }

        (await reader.MoveNextAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(20))).Should().BeTrue();
        reader.Current.Item.Should().BeOneOf(1, 2);
        first.ToString().Should().EndWith("abandoned)");
    }

    [PostgresFact]
    public async Task ABodyWhoseCompletionIsStillInProgress_MakesTheNextStepThrowInvalidOperation_AndTheCompletionStands()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);

        await using IAsyncEnumerator<PostgresDelivery<int>> reader = queue.ReadAllAsync().GetAsyncEnumerator();
        (await reader.MoveNextAsync()).Should().BeTrue();
        PostgresDelivery<int> first = reader.Current;

        // The body's completion, not awaited by the body, is held at the server while the loop asks for the next item.
        Task<bool>? next = null;
        Task<bool> completing = await CallHeldAtTheServerAsync(
            "LOCK TABLE @schema.queue_items IN EXCLUSIVE MODE", a,
            async () =>
            {
                await first.CompleteAsync();
                return true;
            },
            () => next = reader.MoveNextAsync().AsTask());

        await FluentActions.Awaiting(() => next!).Should().ThrowAsync<InvalidOperationException>();
        await completing.WaitAsync(Bound);
        (await queue.UnfinishedAsync()).Should().Be(1, "the body's completion went through; nothing else was taken");
    }

    [PostgresFact]
    public async Task Cancelled_WhileWaiting_AfterCompletingTheDeliveryBefore()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(1);
        using var cancel = new CancellationTokenSource();

        await using IAsyncEnumerator<PostgresDelivery<int>> reader = queue.ReadAllAsync(cancel.Token).GetAsyncEnumerator();
        (await reader.MoveNextAsync()).Should().BeTrue();
        Task<bool> next = reader.MoveNextAsync().AsTask();
        await EventuallyAsync(async () => await queue.UnfinishedAsync() == 0, "the call that looks for item 2 completes item 1");
        next.IsCompleted.Should().BeFalse("nothing else was put");
        cancel.Cancel();

        await FluentActions.Awaiting(() => next.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        await queue.PutAsync(2);
        await using PostgresDelivery<int> two = await queue.GetAsync(TimeSpan.Zero);
        two.Attempt.Should().Be(1, "the cancelled wait took nothing");
    }

    [PostgresTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task CancelledBeforeAskingForTheNext_CompletesTheDeliveryTheBodyFinished_UnlessTheBodySettledIt(bool abandonInBody)
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);
        using var cancel = new CancellationTokenSource();

        Func<Task> loop = async () =>
        {
            await foreach (PostgresDelivery<int> delivery in queue.ReadAllAsync(cancel.Token))
            {
                if (abandonInBody)
                {
                    await delivery.AbandonAsync();
                }

                cancel.Cancel(); // the body's work is done; the loop is asked to stop
            }
        };

        await loop.Should().ThrowAsync<OperationCanceledException>();
        await using PostgresDelivery<int> next = await queue.GetAsync(TimeSpan.Zero);
        if (abandonInBody)
        {
            (await queue.UnfinishedAsync()).Should().Be(2, "item 1 was given back by the body, item 2 never taken");
            (next.Item, next.Attempt).Should().Be((1, 2));
        }
        else
        {
            (await queue.UnfinishedAsync()).Should().Be(1, "item 1 was completed, item 2 never taken");
            (next.Item, next.Attempt).Should().Be((2, 1));
        }
    }

    [PostgresFact]
    public async Task TheCompletionThatEmptiesTheQueue_WakesAJoinInAnotherCoordinator()
    {
        Member reader = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        Member joiner = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        PostgresQueue<int> queue = reader.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(1);
        using var stop = new CancellationTokenSource();
        await using IAsyncEnumerator<PostgresDelivery<int>> loop = queue.ReadAllAsync(stop.Token).GetAsyncEnumerator();
        (await loop.MoveNextAsync()).Should().BeTrue();

        Task joined = joiner.Coordinator.CreateQueue<int>("numbers").JoinAsync().AsTask();
        await EventuallyAsync(async () => await ScalarAsync<long>($"SELECT count(*) FROM {Schema}.queue_joins") == 1, "the join is recorded");
        joined.IsCompleted.Should().BeFalse();

        Task<bool> next = loop.MoveNextAsync().AsTask(); // completes item 1, then waits for another
        await joined.WaitAsync(Bound);
        next.IsCompleted.Should().BeFalse();
        stop.Cancel();
        await FluentActions.Awaiting(() => next.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    [PostgresFact]
    public async Task ReadLoopsCancelledAtRandomMoments_WhileItemsArrive_ProcessEveryItemExactlyOnce()
    {
        PostgresQueue<int>[] queues = await OneQueueOnTwoCoordinatorsAsync();
        const int Items = 300;
        var processed = new System.Collections.Concurrent.ConcurrentDictionary<int, int>();
        using var stop = new CancellationTokenSource();
        int loops = 0;

        // Each reader runs loop after loop, each cancelled after a random 0-15 ms: the cancellation lands while the loop
        // waits, while its call runs, or between a body and the next call. A body that ran to its end is completed in
        // every case, and a cancelled wait takes nothing, so each item is processed once and none is left.
        Task[] readers = Enumerable.Range(0, 4).Select(i => Task.Run(async () =>
        {
            var random = new Random(i);
            while (!stop.IsCancellationRequested)
            {
                using var cancel = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
                cancel.CancelAfter(TimeSpan.FromMilliseconds(random.Next(0, 16)));
                Interlocked.Increment(ref loops);
                try
                {
                    await foreach (PostgresDelivery<int> delivery in queues[i % 2].ReadAllAsync(cancel.Token))
                    {
                        processed.AddOrUpdate(delivery.Item, 1, (_, n) => n + 1);
                    }
                }
                catch (OperationCanceledException) when (cancel.IsCancellationRequested)
                {
                    // The next loop goes on.
                }
            }
        })).ToArray();
        await PutAllAsync(queues, Items, producers: 2).WaitAsync(Bound);
        await queues[0].JoinAsync(Bound);
        stop.Cancel();
        await Task.WhenAll(readers).WaitAsync(Bound);

        processed.Keys.Should().BeEquivalentTo(Enumerable.Range(0, Items), "no item was lost");
        processed.Values.Should().AllSatisfy(n => n.Should().Be(1), "no finished body's item was given back and delivered again");
        (await queues[1].UnfinishedAsync()).Should().Be(0);
        loops.Should().BeGreaterThan(4, "the loops were cancelled and started again");
    }

    [PostgresFact]
    public async Task ManyReadLoops_OnTwoCoordinators_EveryItemCompletedExactlyOnce()
    {
        PostgresQueue<int>[] queues = await OneQueueOnTwoCoordinatorsAsync();
        const int Items = 400;
        var seen = new System.Collections.Concurrent.ConcurrentBag<(int Item, int Attempt)>();

        Task[] readers = Enumerable.Range(0, 6).Select(i => Task.Run(async () =>
        {
            await foreach (PostgresDelivery<int> delivery in queues[i % 2].ReadAllAsync())
            {
                seen.Add((delivery.Item, delivery.Attempt));
            }
        })).ToArray();
        await PutAllAsync(queues, Items, producers: 4).WaitAsync(Bound);
        await queues[0].JoinAsync(Bound);
        await queues[1].ShutdownAsync();
        await Task.WhenAll(readers).WaitAsync(Bound);

        seen.Select(s => s.Item).Should().BeEquivalentTo(Enumerable.Range(0, Items), "every item read exactly once");
        seen.Should().AllSatisfy(s => s.Attempt.Should().Be(1));
        (await queues[0].UnfinishedAsync()).Should().Be(0);
    }

    /// <summary>The queue "numbers" as seen by two coordinators on separate data sources.</summary>
    private async Task<PostgresQueue<int>[]> OneQueueOnTwoCoordinatorsAsync()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        return [a.Coordinator.CreateQueue<int>("numbers"), b.Coordinator.CreateQueue<int>("numbers")];
    }

    /// <summary>Puts 0 to <paramref name="items"/> - 1 from <paramref name="producers"/> tasks: producer p puts every
    /// <paramref name="producers"/>-th item from p on, through the coordinator p % 2.</summary>
    private static Task PutAllAsync(PostgresQueue<int>[] queues, int items, int producers) =>
        Task.WhenAll(Enumerable.Range(0, producers).Select(p => Task.Run(async () =>
        {
            for (int item = p; item < items; item += producers)
            {
                await queues[p % 2].PutAsync(item);
            }
        })));

    /// <summary>Runs the delivery's lease out on the server before the heartbeat could renew it (as when this process
    /// stalls).</summary>
    private async Task ExpireOnServerAsync(PostgresDelivery<int> delivery) =>
        (await ScalarAsync<long>(
            $"WITH u AS (UPDATE {Schema}.queue_items SET leased_until = now() - interval '1 second' WHERE id = {delivery.Id} RETURNING 1) SELECT count(*) FROM u"))
            .Should().Be(1);

    [PostgresFact]
    public async Task ReadAllAsync_AskingForTheNextItemAfterTheCoordinatorWasDisposed_ThrowsObjectDisposed()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);

        Func<Task> loop = async () =>
        {
            await foreach (PostgresDelivery<int> delivery in queue.ReadAllAsync())
            {
                await a.Coordinator.DisposeAsync();
            }
        };

        await loop.Should().ThrowAsync<ObjectDisposedException>();
    }
}
