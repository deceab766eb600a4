using System.Collections.Concurrent;
using AsyncPrimitives;
using Xunit.Abstractions;

namespace AsyncTools.StressTests;

/// <summary>
/// 8 producers and 8 consumers on every queue ordering, bounded and unbounded, with random timeouts, cancellations,
/// non-waiting calls and a Shutdown (graceful or immediate) in the middle of the run. Afterwards every item is
/// accounted for exactly once: got by one consumer, or rejected back to its putter (an exception or TryPut's false),
/// or (immediate shutdown only) dropped by the shutdown; UnfinishedTasks matches and JoinAsync completes.
/// </summary>
public sealed class QueueStressTests(ITestOutputHelper output)
{
    private const int Producers = 8;
    private const int Consumers = 8;
    private const int ItemsPerProducer = 150;

    public static TheoryData<string, int> Queues => new()
    {
        { "fifo", 0 }, { "fifo", 4 },
        { "lifo", 0 }, { "lifo", 4 },
        { "priority", 0 }, { "priority", 4 },
    };

    [Theory]
    [MemberData(nameof(Queues))]
    public Task ProducersAndConsumers_WithTimeoutsCancellationAndShutdown_AccountForEveryItemOnce(string ordering, int maxSize) =>
        Stress.RoundsAsync(output, $"queue[{ordering},max={maxSize}]", rounds: 5, (rng, because) => RoundAsync(Create(ordering, maxSize), rng, because));

    private static AsyncQueueBase<int> Create(string ordering, int maxSize) => ordering switch
    {
        "fifo" => new AsyncQueue<int>(maxSize),
        "lifo" => new AsyncLifoQueue<int>(maxSize),
        _ => new AsyncPriorityQueue<int>(maxSize),
    };

    private static async Task RoundAsync(AsyncQueueBase<int> queue, Random rng, string because)
    {
        int total = Producers * ItemsPerProducer;
        var entered = new ConcurrentBag<int>();
        var rejected = new ConcurrentBag<int>();
        var got = new ConcurrentBag<int>();
        int attempts = 0;
        int deferred = 0;

        // 0: shut down only after the producers are done; 1: graceful shutdown mid-run; 2: immediate shutdown mid-run.
        int shutdownMode = rng.Next(3);
        int shutdownAt = rng.Next(total / 4, total);
        var midRun = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        Task[] producers = Enumerable.Range(0, Producers).Select(p =>
        {
            var r = new Random(rng.Next());
            return Task.Run(async () =>
            {
                for (int i = 0; i < ItemsPerProducer; i++)
                {
                    int item = (p * ItemsPerProducer) + i;
                    (await PutAsync(queue, item, r) ? entered : rejected).Add(item);
                    if (Interlocked.Increment(ref attempts) == shutdownAt)
                    {
                        midRun.TrySetResult();
                    }
                }
            });
        }).ToArray();

        Task[] consumers = Enumerable.Range(0, Consumers).Select(c =>
        {
            var r = new Random(rng.Next());
            return Task.Run(async () =>
            {
                if (c == Consumers - 1)
                {
                    // One consumer drains with await foreach, which ends at shutdown-and-empty.
                    await foreach (int item in queue)
                    {
                        got.Add(item);
                        Done(queue, r, ref deferred);
                    }

                    return;
                }

                while (true)
                {
                    (bool ok, int item, bool shutDown) = await GetAsync(queue, r);
                    if (shutDown)
                    {
                        return;
                    }

                    if (ok)
                    {
                        got.Add(item);
                        Done(queue, r, ref deferred);
                    }
                    else
                    {
                        await Task.Yield(); // a failed non-waiting attempt must not spin the other workers off the cores
                    }
                }
            });
        }).ToArray();

        Task controller = Task.Run(async () =>
        {
            if (shutdownMode != 0)
            {
                await midRun.Task;
                queue.Shutdown(immediate: shutdownMode == 2);
            }
        });

        await Task.WhenAll(producers).Bounded();
        await controller.Bounded();
        queue.Shutdown(); // mode 0: after every put; otherwise a harmless second call
        await Task.WhenAll(consumers).Bounded();

        // Sorted comparisons: FluentAssertions' equivalency is quadratic on thousands of items.
        int[] gotItems = got.Order().ToArray();
        int[] enteredItems = entered.Order().ToArray();
        gotItems.Distinct().Should().HaveCount(gotItems.Length, because + ": no item is got twice");
        entered.Concat(rejected).Order().Should().Equal(Enumerable.Range(0, total), because + ": every put either entered or was rejected, once");
        gotItems.Except(enteredItems).Should().BeEmpty(because + ": only entered items are got");
        if (shutdownMode != 2)
        {
            gotItems.Should().Equal(enteredItems, because + ": every entered item is got (no immediate shutdown)");
        }

        queue.Count.Should().Be(0, because);
        queue.Lines.Waiting.Should().Be(0, because);
        queue.Lines.Waiting.Should().Be(0, because);

        // Items got and not yet marked done are exactly the unfinished ones (immediate shutdown counted its drops as done).
        queue.UnfinishedTasks.Should().Be(deferred, because);
        Task join = queue.JoinAsync().AsTask();
        join.IsCompleted.Should().Be(deferred == 0, because);
        for (int i = 0; i < deferred; i++)
        {
            queue.TaskDone();
        }

        await join.Bounded();
        queue.Invoking(q => q.TaskDone()).Should().Throw<InvalidOperationException>(because);
    }

    /// <summary>Marks the item done now, or (one time in eight) leaves it for the end of the round.</summary>
    private static void Done(AsyncQueueBase<int> queue, Random r, ref int deferred)
    {
        if (r.Next(8) == 0)
        {
            Interlocked.Increment(ref deferred);
        }
        else
        {
            queue.TaskDone();
        }
    }

    /// <summary>One put in a random form; true if the item entered the queue.</summary>
    private static async Task<bool> PutAsync(AsyncQueueBase<int> queue, int item, Random r)
    {
        try
        {
            switch (r.Next(7))
            {
                case 0:
                case 1:
                    await queue.PutAsync(item);
                    return true;
                case 2:
                    await queue.PutAsync(item, RandomTimeout(r));
                    return true;
                case 3:
                    return queue.TryPut(item);
                case 4:
                {
                    // Cancelled at once, racing with a getter's hand-off on another thread.
                    using var cts = new CancellationTokenSource();
                    ValueTask put = queue.PutAsync(item, cts.Token);
                    cts.Cancel();
                    await put;
                    return true;
                }

                case 5:
                {
                    using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(r.Next(1, 3)));
                    await queue.PutAsync(item, Timeout.InfiniteTimeSpan, cts.Token);
                    return true;
                }

                default:
                {
                    // A token already cancelled: always rejected, even when the queue has room.
                    using var cts = new CancellationTokenSource();
                    cts.Cancel();
                    await queue.PutAsync(item, cts.Token);
                    return true;
                }
            }
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException or QueueShutDownException)
        {
            return false;
        }
    }

    /// <summary>One get in a random form.</summary>
    private static async Task<(bool Ok, int Item, bool ShutDown)> GetAsync(AsyncQueueBase<int> queue, Random r)
    {
        try
        {
            switch (r.Next(6))
            {
                case 0:
                case 1:
                    return (true, await queue.GetAsync(), false);
                case 2:
                    return (true, await queue.GetAsync(RandomTimeout(r)), false);
                case 3:
                    return queue.TryGet(out int item) ? (true, item, false) : (false, 0, false);
                case 4:
                {
                    using var cts = new CancellationTokenSource();
                    ValueTask<int> get = queue.GetAsync(cts.Token);
                    cts.Cancel();
                    return (true, await get, false);
                }

                default:
                {
                    using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(r.Next(1, 3)));
                    return (true, await queue.GetAsync(cts.Token), false);
                }
            }
        }
        catch (QueueShutDownException)
        {
            return (false, 0, true);
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
            return (false, 0, false);
        }
    }

    private static TimeSpan RandomTimeout(Random r) => r.Next(4) switch
    {
        0 => TimeSpan.Zero,
        1 => TimeSpan.FromMilliseconds(1),
        2 => TimeSpan.FromMilliseconds(r.Next(1, 5)),
        _ => Timeout.InfiniteTimeSpan,
    };
}
