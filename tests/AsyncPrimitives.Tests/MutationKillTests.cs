using System.Runtime.CompilerServices;

namespace AsyncPrimitives.Tests;

/// <summary>
/// Tests written to kill Stryker.NET mutants that survived in the wait engine (WaitQueue, WaitNode, PermitPool), the
/// queue stores and AsyncQueueBase, each of which revealed behaviour no test pinned: exact node-pool accounting,
/// registration disposal on recycle, misuse detection, releases with waiters on a semaphore with a bound above one,
/// racing fast paths, a wrapped FIFO ring buffer growing, references dropped by Shutdown(immediate) and by taking the
/// last priority item, the queue's TimeProvider, and the heap's order against an oracle. See docs/reliability.md.
/// </summary>
public sealed class MutationKillTests
{
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task NodePool_KeepsAtMost32_AndCountsExactly()
    {
        var semaphore = new AsyncSemaphore(0);
        using (var cts = new CancellationTokenSource())
        {
            Task[] waits = Enumerable.Range(0, 40).Select(_ => semaphore.AcquireAsync(cts.Token).AsTask()).ToArray();
            semaphore.WaiterCount.Should().Be(40);
            cts.Cancel();
            await SettledAsync(waits);
        }

        semaphore.PooledWaiters.Should().Be(32, "40 nodes came back, 32 are kept");
        Task<AsyncSemaphore.Releaser>[] next = Enumerable.Range(0, 10).Select(_ => semaphore.AcquireAsync().AsTask()).ToArray();
        semaphore.PooledWaiters.Should().Be(22, "10 nodes were taken from the pool");
        semaphore.WaiterCount.Should().Be(10);
        semaphore.Release(10);
        await Task.WhenAll(next).WaitAsync(s_bound);
        semaphore.PooledWaiters.Should().Be(32);
        semaphore.CurrentCount.Should().Be(0);
    }

    [Fact]
    public async Task TimedOutNode_IsNotPooled_ButACancelledOneIs()
    {
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        Task timed = gate.AcquireAsync(TimeSpan.FromSeconds(1)).AsTask();
        time.Advance(TimeSpan.FromSeconds(1));
        await timed.Invoking(t => t).Should().ThrowAsync<TimeoutException>();
        gate.PooledWaiters.Should().Be(0, "a node that had a timer is left to the GC");
        time.ActiveTimers.Should().Be(0);

        using var cts = new CancellationTokenSource();
        Task cancelled = gate.AcquireAsync(cts.Token).AsTask();
        cts.Cancel();
        await cancelled.Invoking(t => t).Should().ThrowAsync<OperationCanceledException>();
        gate.PooledWaiters.Should().Be(1);
        held.Dispose();
    }

    [Fact]
    public async Task RecycledNode_DropsTheRegistrationOfItsPreviousWait()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();
        using var first = new CancellationTokenSource();
        ValueTask<AsyncLock.Releaser> granted = gate.AcquireAsync(first.Token);
        gate.Release();
        (await granted).Dispose(); // the node is back in the pool
        gate.PooledWaiters.Should().Be(1);

        gate.TryAcquire(out _).Should().BeTrue();
        Task<AsyncLock.Releaser> second = gate.AcquireAsync().AsTask(); // reuses that node, with no token
        first.Cancel();                                                  // must not reach the reused node
        second.IsCompleted.Should().BeFalse();
        gate.WaiterCount.Should().Be(1);
        gate.Release();
        (await second.WaitAsync(s_bound)).Dispose();
    }

    [Fact]
    public async Task ResultOfAPendingWait_IsRejected_AndTheWaiterStaysQueued()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> pending = gate.AcquireAsync();
        ValueTaskAwaiter<AsyncLock.Releaser> awaiter = pending.GetAwaiter();
        FluentActions.Invoking(() => awaiter.GetResult()).Should().Throw<InvalidOperationException>();
        gate.PooledWaiters.Should().Be(0, "a pending node is never recycled");
        gate.WaiterCount.Should().Be(1);
        gate.Release();
        (await pending).Dispose();
    }

    [Fact]
    public async Task ResultRequestedTwice_IsRejected_AndThePoolHoldsTheNodeOnce()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> wait = gate.AcquireAsync();
        gate.Release();
        (await wait.AsTask().WaitAsync(s_bound)).Dispose();
        ValueTaskAwaiter<AsyncLock.Releaser> awaiter = wait.GetAwaiter();
        FluentActions.Invoking(() => awaiter.GetResult()).Should().Throw<InvalidOperationException>();
        gate.PooledWaiters.Should().Be(1);
    }

    [Fact]
    public void CancelledWait_LeavesNothingReachableFromThePool()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        WeakReference source = CancelledWaitProbe.CancelOneObservedWait(gate.AcquireAsync);
        gate.PooledWaiters.Should().Be(1);

        CancelledWaitProbe.Collect();
        source.IsAlive.Should().BeFalse();
        held.Dispose();
    }

    [Fact]
    public async Task Semaphore_ReleaseOfSeveralWithWaiters_GrantsThemAndChecksTheBound()
    {
        var semaphore = new AsyncSemaphore(0, 3);
        Task<AsyncSemaphore.Releaser> a = semaphore.AcquireAsync().AsTask();
        Task<AsyncSemaphore.Releaser> b = semaphore.AcquireAsync().AsTask();
        semaphore.WaiterCount.Should().Be(2);
        semaphore.CurrentCount.Should().Be(0, "never negative while waiters queue");
        semaphore.Invoking(s => s.Release(4)).Should().Throw<SemaphoreFullException>();
        semaphore.WaiterCount.Should().Be(2);
        semaphore.Release(3); // two go to the waiters, one stays
        await Task.WhenAll(a, b).WaitAsync(s_bound);
        semaphore.CurrentCount.Should().Be(1);
        semaphore.WaiterCount.Should().Be(0);
    }

    [Fact]
    public async Task Lock_PreCancelledOrZeroTimeout_FailAtOnceAndQueueNothing()
    {
        var gate = new AsyncLock();
        Task canceled = gate.AcquireAsync(new CancellationToken(true)).AsTask();
        canceled.IsCanceled.Should().BeTrue("a pre-cancelled token fails even on a free lock");
        gate.IsLocked.Should().BeFalse();

        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        Task zero = gate.AcquireAsync(TimeSpan.Zero).AsTask();
        zero.IsFaulted.Should().BeTrue();
        await zero.Invoking(t => t).Should().ThrowAsync<TimeoutException>();
        gate.WaiterCount.Should().Be(0);
        held.Dispose();
        gate.AcquireAsync(TimeSpan.Zero).IsCompletedSuccessfully.Should().BeTrue();
    }

    [Fact]
    public async Task ReaderWriterLock_CancelledWriter_AdmitsTheReadersItHeldBack()
    {
        var rw = new AsyncReaderWriterLock();
        rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser reader).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        Task writer = rw.AcquireWriteAsync(cts.Token).AsTask();
        Task<AsyncReaderWriterLock.Releaser> secondReader = rw.AcquireReadAsync().AsTask();
        secondReader.IsCompleted.Should().BeFalse("a waiting writer holds back later readers");
        cts.Cancel();
        (await secondReader.WaitAsync(s_bound)).Dispose();
        await writer.Invoking(t => t).Should().ThrowAsync<OperationCanceledException>();
        reader.Dispose();
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public async Task Semaphore_RacingTryAcquireAndRelease_NeitherOverGrantsNorLosesPermits()
    {
        for (int round = 0; round < 200; round++)
        {
            var semaphore = new AsyncSemaphore(1);
            int granted = 0;
            using var start = new Barrier(4);
            Task[] racers = Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
            {
                start.SignalAndWait();
                for (int i = 0; i < 50; i++)
                {
                    if (semaphore.TryAcquire())
                    {
                        Interlocked.Increment(ref granted);
                    }
                }
            })).ToArray();
            await Task.WhenAll(racers).WaitAsync(s_bound);
            granted.Should().Be(1, "one permit is granted once (round {0})", round);
        }

        for (int round = 0; round < 200; round++)
        {
            var semaphore = new AsyncSemaphore(0);
            using var start = new Barrier(4);
            Task[] releasers = Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
            {
                start.SignalAndWait();
                for (int i = 0; i < 50; i++)
                {
                    semaphore.Release();
                }
            })).ToArray();
            await Task.WhenAll(releasers).WaitAsync(s_bound);
            semaphore.CurrentCount.Should().Be(200, "no racing release is lost (round {0})", round);
        }
    }

    [Fact]
    public async Task FifoQueue_GrowingWhileWrapped_KeepsTheOrder()
    {
        var queue = new AsyncQueue<int>();
        int next = 0;
        int expected = 0;
        for (int i = 0; i < 10; i++)
        {
            await queue.PutAsync(next++);
        }

        for (int i = 0; i < 7; i++)
        {
            (await queue.GetAsync()).Should().Be(expected++);
        }

        for (int i = 0; i < 40; i++)
        {
            await queue.PutAsync(next++); // wraps around the first array, then grows it twice
        }

        while (queue.TryGet(out int item))
        {
            item.Should().Be(expected++);
        }

        expected.Should().Be(next);
    }

    [Theory]
    [InlineData("fifo")]
    [InlineData("lifo")]
    [InlineData("priority")]
    public void ShutdownImmediate_DropsTheReferencesToTheItems(string ordering)
    {
        AsyncQueueBase<object> queue = ordering switch
        {
            "fifo" => new AsyncQueue<object>(),
            "lifo" => new AsyncLifoQueue<object>(),
            _ => new AsyncPriorityQueue<object>(comparer: Comparer<object>.Create((a, b) => a.GetHashCode().CompareTo(b.GetHashCode()))),
        };
        List<WeakReference> items = PutItems(queue, 5);
        queue.Shutdown(immediate: true);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        items.Should().OnlyContain(w => !w.IsAlive, "the queue keeps no reference to dropped items");
        GC.KeepAlive(queue);
    }

    [Theory]
    [InlineData("fifo")]
    [InlineData("lifo")]
    [InlineData("priority")]
    public void TakingTheLastItem_DropsTheQueuesReferenceToIt(string ordering)
    {
        AsyncQueueBase<object> queue = ordering switch
        {
            "fifo" => new AsyncQueue<object>(),
            "lifo" => new AsyncLifoQueue<object>(),
            _ => new AsyncPriorityQueue<object>(comparer: Comparer<object>.Create((a, b) => a.GetHashCode().CompareTo(b.GetHashCode()))),
        };
        WeakReference item = PutAndTakeOne(queue);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        item.IsAlive.Should().BeFalse();
        GC.KeepAlive(queue);
    }

    [Fact]
    public async Task Queue_TimeoutsUseTheGivenTimeProvider()
    {
        var time = new ManualTimeProvider();
        var queue = new AsyncQueue<int>(1, time);
        Task<int> get = queue.GetAsync(TimeSpan.FromSeconds(5)).AsTask();
        queue.TryPut(1).Should().BeTrue(); // hands it to the getter
        (await get.WaitAsync(s_bound)).Should().Be(1);
        queue.TryPut(2).Should().BeTrue();
        Task put = queue.PutAsync(3, TimeSpan.FromSeconds(5)).AsTask();
        Task join = queue.JoinAsync(TimeSpan.FromSeconds(5)).AsTask();
        time.ActiveTimers.Should().Be(2);
        time.Advance(TimeSpan.FromSeconds(5));
        await put.Invoking(t => t).Should().ThrowAsync<TimeoutException>();
        await join.Invoking(t => t).Should().ThrowAsync<TimeoutException>();
        queue.Count.Should().Be(1, "the timed-out put did not enqueue");
    }

    [Fact]
    public void PriorityQueue_RandomPutsAndGets_MatchAStableSortOracle()
    {
        var random = new Random(12345);
        for (int round = 0; round < 50; round++)
        {
            var queue = new AsyncPriorityQueue<(int Priority, int Seq)>(comparer: Comparer<(int Priority, int Seq)>.Create((a, b) => a.Priority.CompareTo(b.Priority)));
            var oracle = new List<(int Priority, int Seq)>();
            int seq = 0;
            for (int step = 0; step < 300; step++)
            {
                if (oracle.Count == 0 || random.Next(3) != 0)
                {
                    var item = (random.Next(-5, 6), seq++);
                    queue.TryPut(item).Should().BeTrue();
                    oracle.Add(item);
                }
                else
                {
                    (int Priority, int Seq) expected = oracle.OrderBy(x => x.Priority).ThenBy(x => x.Seq).First();
                    oracle.Remove(expected);
                    queue.TryGet(out var got).Should().BeTrue();
                    got.Should().Be(expected, "round {0} step {1}", round, step);
                }
            }

            foreach ((int Priority, int Seq) expected in oracle.OrderBy(x => x.Priority).ThenBy(x => x.Seq))
            {
                queue.TryGet(out var got).Should().BeTrue();
                got.Should().Be(expected);
            }

            queue.Count.Should().Be(0);
        }
    }

    private static async Task SettledAsync(Task[] tasks) =>
        await Task.WhenAll(tasks).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static List<WeakReference> PutItems(AsyncQueueBase<object> queue, int count)
    {
        var refs = new List<WeakReference>();
        for (int i = 0; i < count; i++)
        {
            var item = new object();
            queue.TryPut(item).Should().BeTrue();
            refs.Add(new WeakReference(item));
        }

        return refs;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference PutAndTakeOne(AsyncQueueBase<object> queue)
    {
        var item = new object();
        queue.TryPut(item).Should().BeTrue();
        queue.TryGet(out object? taken).Should().BeTrue();
        taken.Should().BeSameAs(item);
        return new WeakReference(item);
    }
}
