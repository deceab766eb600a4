using AsyncPrimitives;
using Xunit.Abstractions;

namespace AsyncTools.StressTests;

/// <summary>
/// No lost wake-up: AsyncCondition and AsyncEvent under racing Notify/Set/Clear, waits that wait forever (a lost
/// wake-up hangs them, which the bound turns into a failure) and noise waiters that time out or are cancelled.
/// </summary>
public sealed class WakeUpStressTests(ITestOutputHelper output)
{
    [Fact]
    public Task AsyncCondition_RacingNotifyWithTimingOutWaiters_LosesNoWakeUp() =>
        Stress.RoundsAsync(output, "condition", rounds: 8, async (rng, because) =>
        {
            const int Producers = 4;
            const int Consumers = 4;
            const int Noise = 4;
            const int ItemsPerProducer = 200;
            var condition = new AsyncCondition();
            int available = 0;
            int consumed = 0;
            int produced = 0;
            bool done = false;

            Task[] producers = Enumerable.Range(0, Producers).Select(_ =>
            {
                var r = new Random(rng.Next());
                return Task.Run(async () =>
                {
                    for (int i = 0; i < ItemsPerProducer; i++)
                    {
                        using (await condition.AcquireAsync())
                        {
                            available++;
                            produced++;
                            condition.Notify(); // exactly one wake-up per item: a lost one strands a consumer
                        }

                        await LockStressTests.MaybeYield(r);
                    }
                });
            }).ToArray();

            // Consumers wait without a timeout: they only wake when notified.
            Task[] consumers = Enumerable.Range(0, Consumers).Select(_ => Task.Run(async () =>
            {
                while (true)
                {
                    using (await condition.AcquireAsync())
                    {
                        await condition.WaitUntilAsync(() => available > 0 || done);
                        if (available == 0)
                        {
                            return;
                        }

                        available--;
                        consumed++;
                        if (available > 0)
                        {
                            condition.Notify(); // items left over: pass the wake-up on
                        }
                    }
                }
            })).ToArray();

            // Noise waiters time out or are cancelled; a notification they receive is passed on, so it is never swallowed.
            using var stopNoise = new CancellationTokenSource();
            Task[] noise = Enumerable.Range(0, Noise).Select(_ =>
            {
                var r = new Random(rng.Next());
                return Task.Run(async () =>
                {
                    while (!stopNoise.IsCancellationRequested)
                    {
                        using (await condition.AcquireAsync())
                        {
                            try
                            {
                                if (r.Next(2) == 0)
                                {
                                    await condition.WaitAsync(TimeSpan.FromMilliseconds(r.Next(1, 3)));
                                }
                                else
                                {
                                    using var cts = CancellationTokenSource.CreateLinkedTokenSource(stopNoise.Token);
                                    ValueTask wait = condition.WaitAsync(cts.Token);
                                    cts.CancelAfter(TimeSpan.FromMilliseconds(r.Next(0, 2)));
                                    await wait;
                                }

                                condition.Notify();
                            }
                            catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
                            {
                                condition.IsLocked.Should().BeTrue("a wait re-acquires the lock before it throws");
                            }
                        }
                    }
                });
            }).ToArray();

            await Task.WhenAll(producers).Bounded();
            stopNoise.Cancel();
            await Task.WhenAll(noise).Bounded();
            using (await condition.AcquireAsync())
            {
                done = true;
                condition.NotifyAll();
            }

            await Task.WhenAll(consumers).Bounded();
            produced.Should().Be(Producers * ItemsPerProducer, because);
            consumed.Should().Be(produced, because);
            condition.Lines.Waiting.Should().Be(0, because);
            condition.IsLocked.Should().BeFalse(because);
        });

    /// <summary>
    /// Waiters 0..n-1 wait on a condition; a notifier on another thread wakes them in random chunks, each time
    /// holding the lock and then asking for the lock again from a third party. The waiters must hold the lock again
    /// in notify order, and each chunk ahead of the request made after its notify. Before the engine handed notified
    /// waiters straight to the lock's line, Notify(3) gave 0, 1, 2 back as 2, 1, 0 (pool continuations run last in,
    /// first out), which every round with a chunk of two or more would show.
    /// </summary>
    [Fact]
    public Task AsyncCondition_NotifiedWaiters_GetTheLockBackInNotifyOrder() =>
        Stress.RoundsAsync(output, "condition-order", rounds: 200, async (rng, because) =>
        {
            var condition = new AsyncCondition();
            int n = rng.Next(2, 9);
            var order = new List<int>();
            Task[] waiters = Enumerable.Range(0, n).Select(i => WaitThenRecordAsync(condition, order, i)).ToArray();
            var lateRequests = new List<Task>();
            var chunkEnds = new List<int>();
            int seed = rng.Next();

            await Task.Run(async () =>
            {
                var r = new Random(seed);
                for (int notified = 0, chunk = 0; notified < n; chunk++)
                {
                    using (await condition.AcquireAsync())
                    {
                        int count = r.Next(1, n - notified + 1);
                        condition.Notify(count);
                        notified += count;
                        chunkEnds.Add(notified - 1);
                        int marker = -1 - chunk;
                        lateRequests.Add(Task.Run(async () =>
                        {
                            using (await condition.AcquireAsync())
                            {
                                order.Add(marker);
                            }
                        }));
                    }
                }
            });

            await Task.WhenAll(waiters.Concat(lateRequests)).Bounded();
            order.Where(x => x >= 0).Should().Equal(Enumerable.Range(0, n), because);
            for (int chunk = 0; chunk < chunkEnds.Count; chunk++)
            {
                order.IndexOf(-1 - chunk).Should().BeGreaterThan(order.IndexOf(chunkEnds[chunk]),
                    "{0}: a lock request made after notify {1} comes after the waiters it woke", because, chunk);
            }

            condition.IsLocked.Should().BeFalse(because);
        });

    [Fact]
    public Task AsyncEvent_PingPongWithRacingSetClearAndNoiseWaiters_LosesNoWakeUp() =>
        Stress.RoundsAsync(output, "event", rounds: 8, async (rng, because) =>
        {
            const int Exchanges = 500;
            var ping = new AsyncEvent();
            var pong = new AsyncEvent();

            // Each side waits forever for the other's Set, then clears its own event: a lost Set hangs the round.
            Task pinger = Task.Run(async () =>
            {
                for (int i = 0; i < Exchanges; i++)
                {
                    ping.Set();
                    await pong.WaitAsync();
                    pong.Clear();
                }
            });
            Task ponger = Task.Run(async () =>
            {
                for (int i = 0; i < Exchanges; i++)
                {
                    await ping.WaitAsync();
                    ping.Clear();
                    pong.Set();
                }
            });

            using var stopNoise = new CancellationTokenSource();
            int noiseWoken = 0;
            Task[] noise = Enumerable.Range(0, 4).Select(_ =>
            {
                var r = new Random(rng.Next());
                return Task.Run(async () =>
                {
                    while (!stopNoise.IsCancellationRequested)
                    {
                        AsyncEvent target = r.Next(2) == 0 ? ping : pong;
                        try
                        {
                            if (r.Next(2) == 0)
                            {
                                await target.WaitAsync(r.Next(3) == 0 ? TimeSpan.Zero : TimeSpan.FromMilliseconds(1));
                            }
                            else
                            {
                                using var cts = new CancellationTokenSource();
                                ValueTask wait = target.WaitAsync(cts.Token);
                                cts.Cancel();
                                await wait;
                            }

                            Interlocked.Increment(ref noiseWoken);
                        }
                        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
                        {
                        }

                        await Task.Yield();
                    }
                });
            }).ToArray();

            await Task.WhenAll(pinger, ponger).Bounded();
            stopNoise.Cancel();
            await Task.WhenAll(noise).Bounded();

            // Waiters registered before a Clear are still completed by the next Set.
            var late = new AsyncEvent();
            Task[] waiters = Enumerable.Range(0, 64).Select(_ => late.WaitAsync().AsTask()).ToArray();
            late.Clear();
            waiters.Should().OnlyContain(t => !t.IsCompleted, because);
            late.Set();
            await Task.WhenAll(waiters).Bounded();

            ping.Lines.Waiting.Should().Be(0, because);
            pong.Lines.Waiting.Should().Be(0, because);
            output.WriteLine($"{because}: noise waiters woken {noiseWoken}");
        });

    /// <summary>Takes the lock, waits for a notification and records <paramref name="id"/> while holding the lock
    /// again. Runs synchronously up to the wait (the lock must be free), so waiters join the line in call order.</summary>
    private static async Task WaitThenRecordAsync(AsyncCondition condition, List<int> order, int id)
    {
        await condition.AcquireAsync();
        try
        {
            await condition.WaitAsync();
            order.Add(id);
        }
        finally
        {
            condition.Release();
        }
    }
}
