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
            condition.WaiterCount.Should().Be(0, because);
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

            ping.WaiterCount.Should().Be(0, because);
            pong.WaiterCount.Should().Be(0, because);
            output.WriteLine($"{because}: noise waiters woken {noiseWoken}");
        });
}
