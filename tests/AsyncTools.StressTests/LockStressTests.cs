using AsyncPrimitives;
using Xunit.Abstractions;

namespace AsyncTools.StressTests;

/// <summary>
/// AsyncLock, AsyncSemaphore and AsyncReaderWriterLock under 8 racing workers that acquire in every form (waiting,
/// timed, cancelled at once, cancelled by a timer, pre-cancelled, TimeSpan.Zero, Try): an atomic in-critical-section
/// counter proves mutual exclusion / the permit bound is never violated, and afterwards every permit is back.
/// </summary>
public sealed class LockStressTests(ITestOutputHelper output)
{
    private const int Workers = 8;
    private const int Iterations = 400;

    [Fact]
    public Task AsyncLock_RacingAcquiresWithTimeoutsAndCancellation_NeverAdmitsTwoAndReturnsThePermit() =>
        Stress.RoundsAsync(output, "lock", rounds: 5, async (rng, because) =>
        {
            var gate = new AsyncLock();
            var inside = new Occupancy();
            int violations = 0;
            await RunWorkersAsync(rng, async r =>
            {
                if (await TryTakeAsync(r, gate.TryAcquire, (t, ct) => gate.AcquireAsync(t, ct), ct => gate.AcquireAsync(ct)) is not { } releaser)
                {
                    return;
                }

                using (releaser)
                {
                    if (inside.Enter() != 1)
                    {
                        Interlocked.Increment(ref violations);
                    }

                    await MaybeYield(r);
                    inside.Exit();
                }
            });

            violations.Should().Be(0, because);
            inside.Peak.Should().Be(1, because);
            gate.IsLocked.Should().BeFalse(because);
            gate.Lines.Waiting.Should().Be(0, because);
            gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue(because);
            gate.TryAcquire(out _).Should().BeFalse(because);
            held.Dispose();
            gate.Invoking(g => g.Release()).Should().Throw<SynchronizationLockException>(because);
        });

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public Task AsyncSemaphore_RacingAcquiresWithTimeoutsAndCancellation_KeepTheBoundAndConservePermits(int max) =>
        Stress.RoundsAsync(output, $"semaphore[max={max}]", rounds: 5, async (rng, because) =>
        {
            var semaphore = new AsyncSemaphore(max, max);
            var inside = new Occupancy();
            int violations = 0;
            await RunWorkersAsync(rng, async r =>
            {
                if (await TryTakeAsync(r, TryAcquire, (t, ct) => semaphore.AcquireAsync(t, ct), ct => semaphore.AcquireAsync(ct)) is null)
                {
                    return;
                }

                // Sometimes take a second permit without waiting (waiting would be hold-and-wait) and return both at once.
                int held = r.Next(3) == 0 && semaphore.TryAcquire() ? 2 : 1;
                for (int i = 0; i < held; i++)
                {
                    if (inside.Enter() > max)
                    {
                        Interlocked.Increment(ref violations);
                    }
                }

                await MaybeYield(r);
                for (int i = 0; i < held; i++)
                {
                    inside.Exit();
                }

                semaphore.Release(held);
            });

            bool TryAcquire(out AsyncSemaphore.Releaser releaser)
            {
                releaser = default;
                return semaphore.TryAcquire();
            }

            violations.Should().Be(0, because);
            inside.Peak.Should().BeLessThanOrEqualTo(max, because);
            semaphore.CurrentCount.Should().Be(max, because + ": permits are conserved");
            semaphore.Lines.Waiting.Should().Be(0, because);
            semaphore.Invoking(s => s.Release()).Should().Throw<SemaphoreFullException>(because);
            for (int i = 0; i < max; i++)
            {
                semaphore.TryAcquire().Should().BeTrue(because);
            }

            semaphore.TryAcquire().Should().BeFalse(because);
            semaphore.Release(max);
            semaphore.CurrentCount.Should().Be(max, because);
        });

    [Theory]
    [InlineData(2)]
    [InlineData(int.MaxValue)]
    public Task AsyncReaderWriterLock_RacingReadersAndWriters_NeverMixAndReturnEverything(int maxReaders) =>
        Stress.RoundsAsync(output, $"rwlock[maxReaders={maxReaders}]", rounds: 5, async (rng, because) =>
        {
            var rw = new AsyncReaderWriterLock(maxReaders);
            int readers = 0;
            int writers = 0;
            int violations = 0;
            int reads = 0;
            int writes = 0;
            await RunWorkersAsync(rng, async r =>
            {
                bool write = r.Next(3) == 0;
                AsyncReaderWriterLock.Releaser? releaser = write
                    ? await TryTakeAsync(r, rw.TryAcquireWrite, (t, ct) => rw.AcquireWriteAsync(t, ct), ct => rw.AcquireWriteAsync(ct))
                    : await TryTakeAsync(r, rw.TryAcquireRead, (t, ct) => rw.AcquireReadAsync(t, ct), ct => rw.AcquireReadAsync(ct));
                if (releaser is not { } held)
                {
                    return;
                }

                held.IsWriter.Should().Be(write);
                if (write)
                {
                    // Both counters are interlocked, so a writer and a reader inside together cannot both miss each other.
                    if (Interlocked.Increment(ref writers) != 1 || Volatile.Read(ref readers) != 0)
                    {
                        Interlocked.Increment(ref violations);
                    }

                    Interlocked.Increment(ref writes);
                    await MaybeYield(r);
                    Interlocked.Decrement(ref writers);
                }
                else
                {
                    int now = Interlocked.Increment(ref readers);
                    if (now > maxReaders || Volatile.Read(ref writers) != 0)
                    {
                        Interlocked.Increment(ref violations);
                    }

                    Interlocked.Increment(ref reads);
                    await MaybeYield(r);
                    Interlocked.Decrement(ref readers);
                }

                held.Dispose();
            });

            violations.Should().Be(0, because);
            reads.Should().BePositive(because);
            writes.Should().BePositive(because);
            rw.CurrentReaderCount.Should().Be(0, because);
            rw.IsWriteLockHeld.Should().BeFalse(because);
            rw.Lines.Waiting.Should().Be(0, because);
            rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser w).Should().BeTrue(because + ": nothing is held any more");
            w.Dispose();
            rw.Invoking(l => l.ReleaseRead()).Should().Throw<SynchronizationLockException>(because);
        });

    [Fact]
    public async Task AsyncReaderWriterLock_WriterCancelledAsItJoinsTheLine_HoldsBackNoReader()
    {
        // A writer that finds a reader inside closes the readers' fast path as it is about to queue; its token is
        // cancelled by another thread at that moment, so some of these calls see the token still uncancelled at the
        // start and cancelled as they join the line. The writer never waited: a reader that comes next enters at once.
        var rw = new AsyncReaderWriterLock();
        rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser inside).Should().BeTrue();
        int ready = 0, go = 0;
        for (int i = 0; i < 5_000; i++)
        {
            using var cts = new CancellationTokenSource();
            Volatile.Write(ref ready, 0);
            Volatile.Write(ref go, 0);
            Task canceller = Task.Run(() =>
            {
                Volatile.Write(ref ready, 1);
                SpinWait.SpinUntil(() => Volatile.Read(ref go) == 1);
                cts.Cancel();
            });
            SpinWait.SpinUntil(() => Volatile.Read(ref ready) == 1);
            Volatile.Write(ref go, 1);
            ValueTask<AsyncReaderWriterLock.Releaser> writer = rw.AcquireWriteAsync(cts.Token);
            await canceller.Bounded();
            await FluentActions.Awaiting(() => writer.AsTask().Bounded()).Should().ThrowAsync<OperationCanceledException>();

            rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser next).Should().BeTrue($"no writer waits (call {i})");
            next.Dispose();
        }

        rw.Lines.Waiting.Should().Be(0);
        inside.Dispose();
        rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser w).Should().BeTrue();
        w.Dispose();
    }

    /// <summary>A non-waiting acquire, in the shape of TryAcquire(out releaser).</summary>
    internal delegate bool TryAcquireFunc<TReleaser>(out TReleaser releaser);

    /// <summary>Runs <see cref="Workers"/> workers, each doing <see cref="Iterations"/> steps with its own random stream.</summary>
    internal static async Task RunWorkersAsync(Random rng, Func<Random, Task> step)
    {
        Task[] workers = Enumerable.Range(0, Workers).Select(_ =>
        {
            var r = new Random(rng.Next());
            return Task.Run(async () =>
            {
                for (int i = 0; i < Iterations; i++)
                {
                    await step(r);
                }
            });
        }).ToArray();
        await Task.WhenAll(workers).Bounded();
    }

    /// <summary>One acquire in a random form; the releaser, or null if it timed out, was cancelled or Try failed.</summary>
    internal static async Task<TReleaser?> TryTakeAsync<TReleaser>(
        Random r,
        TryAcquireFunc<TReleaser> tryAcquire,
        Func<TimeSpan, CancellationToken, ValueTask<TReleaser>> timed,
        Func<CancellationToken, ValueTask<TReleaser>> untimed)
        where TReleaser : struct
    {
        try
        {
            switch (r.Next(8))
            {
                case 0:
                case 1:
                    return await untimed(CancellationToken.None);
                case 2:
                    return await timed(TimeSpan.FromMilliseconds(r.Next(1, 3)), CancellationToken.None);
                case 3:
                    return await timed(TimeSpan.Zero, CancellationToken.None);
                case 4:
                {
                    // Cancelled right away: races with a release handing the permit over on another thread.
                    using var cts = new CancellationTokenSource();
                    ValueTask<TReleaser> wait = untimed(cts.Token);
                    cts.Cancel();
                    return await wait;
                }

                case 5:
                {
                    using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(r.Next(1, 3)));
                    return await timed(Timeout.InfiniteTimeSpan, cts.Token);
                }

                case 6:
                {
                    using var cts = new CancellationTokenSource();
                    cts.Cancel();
                    return await untimed(cts.Token);
                }

                default:
                    return tryAcquire(out TReleaser releaser) ? releaser : null;
            }
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
            return null;
        }
    }

    internal static async Task MaybeYield(Random r)
    {
        if (r.Next(2) == 0)
        {
            await Task.Yield();
        }
    }
}
