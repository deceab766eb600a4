using System.Runtime.CompilerServices;
using AsyncIterTools;
using AsyncIterTools.Tests;

namespace AsyncTools.StressTests;

/// <summary>
/// Breaking out of <c>await foreach</c> over a concurrent operator while work is in flight (work or sources parked on
/// a gate that only their token can end) leaves nothing running: when the loop has exited (DisposeAsync returned),
/// every started piece of work finished or observed cancellation, and every source was disposed exactly once.
/// </summary>
public sealed class AbandonedEnumerationTests
{
    private static readonly TaskCompletionSource s_never = new();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Map_BreakWithCallsInFlight_CancelsAndAwaitsThemAndDisposesTheSource(bool ordered)
    {
        TrackingSource<int> source = Sources.Endless();
        var probe = new ConcurrencyProbe(4);
        Func<int, CancellationToken, ValueTask<int>> selector = (i, ct) =>
            i == 0 ? new ValueTask<int>(i) : new ValueTask<int>(probe.RunAsync(i, s_never.Task, ct));
        IAsyncEnumerable<int> mapped = ordered ? source.Map(selector, 4) : source.MapUnordered(selector, 4);

        await foreach (int x in mapped)
        {
            x.Should().Be(0);
            await probe.ReachedMax.Bounded(); // 1..4 are parked in flight
            break;
        }

        AssertNothingRunning(probe);
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task AsCompleted_BreakWithWorkInFlight_CancelsAndAwaitsIt()
    {
        var probe = new ConcurrencyProbe(3);
        var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(Enumerable.Range(0, 100).Select(i =>
            (Func<CancellationToken, Task<int>>)(ct => i == 0 ? Task.FromResult(0) : probe.RunAsync(i, s_never.Task, ct))));

        await foreach (int x in AsyncIter.AsCompleted(work, maxConcurrency: 4))
        {
            x.Should().Be(0);
            await probe.ReachedMax.Bounded();
            break;
        }

        AssertNothingRunning(probe);
        work.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task Merge_BreakWithSourcesParked_CancelsAndDisposesEachOnce()
    {
        StallingSource[] sources = [new(0), new(1), new(0)];
        await foreach (int x in AsyncIter.Merge(sources.Select(s => (IAsyncEnumerable<int>)s), maxConcurrency: 3))
        {
            x.Should().Be(0);
            await Task.WhenAll(sources[0].Stalled, sources[2].Stalled).Bounded(); // the other two are parked
            break;
        }

        foreach (StallingSource source in sources)
        {
            source.AssertAbandonedCleanly();
        }
    }

    [Fact]
    public async Task Prefetch_BreakWithTheProducerParked_StopsItAndDisposesTheSource()
    {
        var source = new StallingSource(3);
        await foreach (int x in source.Prefetch(8))
        {
            await source.Stalled.Bounded();
            break;
        }

        source.AssertAbandonedCleanly();
    }

    [Fact]
    public async Task TimedBatch_BreakWithTheReadAheadParked_StopsItAndDisposesTheSource()
    {
        var source = new StallingSource(2); // a full first batch, then the read-ahead parks in the source
        var time = new CountingTimeProvider();
        await foreach (int[] batch in source.Batch(2, TimeSpan.FromSeconds(1), time))
        {
            batch.Should().Equal(0, 1);
            await source.Stalled.Bounded();
            break;
        }

        source.AssertAbandonedCleanly();
        time.ActiveTimers.Should().Be(0, "no batch deadline timer is left armed");
    }

    [Fact]
    public async Task Tee_LastCopyAbandonedWithAPullParked_CancelsThePullAndDisposesTheSource()
    {
        var source = new StallingSource(2);
        IAsyncEnumerable<int>[] copies = source.Tee(2, maxBuffer: 4);
        await foreach (int x in copies[0])
        {
            break; // detaches the first copy
        }

        using var cts = new CancellationTokenSource();
        int read = 0;
        Func<Task> second = async () =>
        {
            await foreach (int x in copies[1].WithCancellation(cts.Token))
            {
                if (++read == 2)
                {
                    // The next MoveNextAsync starts a pull that parks in the source; give up on it.
                    _ = source.Stalled.ContinueWith(_ => cts.Cancel(), TaskScheduler.Default);
                }
            }
        };

        await second.Should().ThrowAsync<OperationCanceledException>();
        read.Should().Be(2);
        source.AssertAbandonedCleanly();
    }

    private static void AssertNothingRunning(ConcurrencyProbe probe)
    {
        probe.InFlight.Should().Be(0, "every started piece of work finished or observed cancellation before the loop exited");
        probe.Finished.Should().Be(probe.Started);
        probe.Cancelled.Should().BeGreaterThan(0, "the parked work observed cancellation");
    }

    /// <summary>
    /// Yields <c>items</c> items, then parks until its token is cancelled. Counts enumerators, disposals and parked
    /// calls that observed cancellation.
    /// </summary>
    private sealed class StallingSource(int items) : IAsyncEnumerable<int>
    {
        private readonly TaskCompletionSource _stalled = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _enumerators;
        private int _disposals;
        private int _cancelledStalls;

        /// <summary>Completes when the source has yielded its items and parked.</summary>
        public Task Stalled => _stalled.Task;

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref _enumerators);
            return Enumerate(cancellationToken).GetAsyncEnumerator(cancellationToken);
        }

        public void AssertAbandonedCleanly()
        {
            Volatile.Read(ref _enumerators).Should().Be(1);
            Volatile.Read(ref _disposals).Should().Be(1, "the source is disposed exactly once, before the loop exited");
            if (_stalled.Task.IsCompleted)
            {
                Volatile.Read(ref _cancelledStalls).Should().Be(1, "the parked MoveNextAsync observed cancellation");
            }
        }

        private async IAsyncEnumerable<int> Enumerate([EnumeratorCancellation] CancellationToken cancellationToken)
        {
            try
            {
                for (int i = 0; i < items; i++)
                {
                    await Task.Yield();
                    yield return i;
                }

                _stalled.TrySetResult();
                try
                {
                    await s_never.Task.WaitAsync(cancellationToken);
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref _cancelledStalls);
                    throw;
                }
            }
            finally
            {
                Interlocked.Increment(ref _disposals);
            }
        }
    }
}
