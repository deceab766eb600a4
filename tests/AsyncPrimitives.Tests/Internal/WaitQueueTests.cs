using System.Runtime.CompilerServices;
using AsyncPrimitives.Internal;
using AsyncPrimitives.Tests.Support;

namespace AsyncPrimitives.Tests.Internal;

/// <summary>
/// The shared wait engine (<see cref="WaitQueue{T, TPolicy}"/>), driven through the primitives: FIFO order kept when
/// waiters leave from anywhere in the line, the outcome rule (whoever unlinks decides), node recycling into a bounded
/// pool, misuse of a waiter's ValueTask, and that a flood of failed waits leaves nothing behind. What the engine
/// holds is read through the primitives' internal <see cref="WaitLines"/>.
/// </summary>
public sealed class WaitQueueTests
{
    private static readonly TimeSpan s_hang = TimeSpan.FromSeconds(10);

    // ---- the line ----

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Waiters_OneLeavingFromAnywhereInTheLine_TheOthersAreServedInOrder(int leaver)
    {
        var semaphore = new AsyncSemaphore(0);
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncSemaphore.Releaser>[] waits = Enumerable.Range(0, 3)
            .Select(i => semaphore.AcquireAsync(i == leaver ? cts.Token : default))
            .ToArray();

        cts.Cancel();

        waits[leaver].IsCanceled.Should().BeTrue();
        semaphore.Lines.Waiting.Should().Be(2);
        int[] others = Enumerable.Range(0, 3).Where(i => i != leaver).ToArray();
        semaphore.Release();
        waits[others[0]].IsCompletedSuccessfully.Should().BeTrue("the oldest remaining waiter is served first");
        waits[others[1]].IsCompleted.Should().BeFalse();
        semaphore.Release();
        waits[others[1]].IsCompletedSuccessfully.Should().BeTrue();
        foreach (int i in others)
        {
            await waits[i];
        }

        semaphore.CurrentCount.Should().Be(0, "both permits went to waiters");
    }

    [Fact]
    public async Task Line_EmptiedByCancellations_TakesNewWaitersInOrder()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncLock.Releaser> gone1 = gate.AcquireAsync(cts.Token);
        ValueTask<AsyncLock.Releaser> gone2 = gate.AcquireAsync(cts.Token);
        cts.Cancel();
        gate.Lines.Waiting.Should().Be(0);

        ValueTask<AsyncLock.Releaser> first = gate.AcquireAsync();
        ValueTask<AsyncLock.Releaser> second = gate.AcquireAsync();

        gate.Lines.Waiting.Should().Be(2);
        held.Dispose();
        first.IsCompletedSuccessfully.Should().BeTrue();
        second.IsCompleted.Should().BeFalse();
        (await first).Dispose();
        (await second.AsTask().WaitAsync(s_hang)).Dispose();
        gone1.IsCanceled.Should().BeTrue();
        gone2.IsCanceled.Should().BeTrue();
    }

    [Fact]
    public async Task CancellationAndTimeout_AfterTheGrant_ChangeNothing()
    {
        var time = new CountingTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncLock.Releaser> wait = gate.AcquireAsync(TimeSpan.FromSeconds(1), cts.Token);

        held.Dispose(); // the grant decides the outcome
        cts.Cancel();
        time.Advance(TimeSpan.FromSeconds(1));

        wait.IsCompletedSuccessfully.Should().BeTrue("whoever unlinks the waiter decides its outcome");
        (await wait).Dispose();
        gate.IsLocked.Should().BeFalse("the lock was handed over once and released once");
        time.ActiveTimers.Should().Be(0);
    }

    // ---- recycling ----

    [Fact]
    public async Task ObservedWait_ReturnsItsNodeToThePool_AndTheNextWaitReusesIt()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> wait = gate.AcquireAsync();
        held.Dispose();
        AsyncLock.Releaser second = await wait;
        gate.Lines.MaxPooled.Should().Be(1);

        ValueTask<AsyncLock.Releaser> next = gate.AcquireAsync();

        gate.Lines.MaxPooled.Should().Be(0, "the node was reused");
        next.IsCompleted.Should().BeFalse("a reused node starts pending");
        second.Dispose();
        (await next.AsTask().WaitAsync(s_hang)).Dispose();
    }

    [Fact]
    public async Task Pool_KeepsAtMostItsCapacity_AndLendsFromIt()
    {
        int more = WaitLines.PoolCapacity + 8;
        var semaphore = new AsyncSemaphore(0);
        using (var cts = new CancellationTokenSource())
        {
            Task[] waits = Enumerable.Range(0, more).Select(_ => semaphore.AcquireAsync(cts.Token).AsTask()).ToArray();
            semaphore.Lines.Waiting.Should().Be(more);
            cts.Cancel();
            await Settle.FinishesAsync(Task.WhenAll(waits));
        }

        semaphore.Lines.MaxPooled.Should().Be(WaitLines.PoolCapacity, "every node came back; the pool keeps its capacity");
        ValueTask<AsyncSemaphore.Releaser>[] next = Enumerable.Range(0, 10).Select(_ => semaphore.AcquireAsync()).ToArray();
        semaphore.Lines.MaxPooled.Should().Be(WaitLines.PoolCapacity - 10, "new waits take pooled nodes");
        semaphore.Release(10);

        // Each wait's outcome is read here, one after another, so each node goes back alone (two going back at the same
        // instant may both take the lock-free slot, one of them then left to the GC: by design, see WaitQueue.Line).
        foreach (ValueTask<AsyncSemaphore.Releaser> wait in next)
        {
            await wait.AsTask().WaitAsync(s_hang);
        }

        semaphore.Lines.MaxPooled.Should().Be(WaitLines.PoolCapacity);
        semaphore.CurrentCount.Should().Be(0);
    }

    [Fact]
    public async Task TimedWait_OnTheSystemClock_ItsNodeIsPooledOnceItsTimerIsQuiet()
    {
        var gate = new AsyncLock(); // TimeProvider.System
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> wait = gate.AcquireAsync(TimeSpan.FromMinutes(5));

        held.Dispose();
        (await wait).Dispose();

        gate.Lines.MaxPooled.Should().Be(1, "the timer never fired, so once disposed nothing can call back into the node");
    }

    [Fact]
    public async Task TimedWait_OnAnotherClock_ItsNodeIsNotPooled_ButAnUntimedOnesIs()
    {
        // Another provider's timer may call back after it was disposed; a late callback must never find its node
        // serving another wait, so such a node is left to the GC.
        var time = new CountingTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        Task timed = gate.AcquireAsync(TimeSpan.FromSeconds(1)).AsTask();
        time.Advance(TimeSpan.FromSeconds(1));
        await timed.Invoking(t => t).Should().ThrowAsync<TimeoutException>();
        gate.Lines.MaxPooled.Should().Be(0);
        time.ActiveTimers.Should().Be(0);

        using var cts = new CancellationTokenSource();
        Task cancelled = gate.AcquireAsync(cts.Token).AsTask();
        cts.Cancel();
        await cancelled.Invoking(t => t).Should().ThrowAsync<OperationCanceledException>();
        gate.Lines.MaxPooled.Should().Be(1);
        held.Dispose();
    }

    [Fact]
    public async Task RecycledNode_DoesNotHearTheCancellationOfItsPreviousWait()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();
        using var first = new CancellationTokenSource();
        ValueTask<AsyncLock.Releaser> granted = gate.AcquireAsync(first.Token);
        gate.Release();
        (await granted).Dispose(); // the node is back in the pool
        gate.Lines.MaxPooled.Should().Be(1);

        gate.TryAcquire(out _).Should().BeTrue();
        Task<AsyncLock.Releaser> second = gate.AcquireAsync().AsTask(); // reuses that node, with no token
        first.Cancel();                                                  // must not reach the reused node

        second.IsCompleted.Should().BeFalse();
        gate.Lines.Waiting.Should().Be(1);
        gate.Release();
        (await second.WaitAsync(s_hang)).Dispose();
    }

    [Fact]
    public void CancelledWait_OnceObserved_LeavesNothingReachableFromThePool()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        WeakReference source = CancelledWaitProbe.CancelOneObservedWait(gate.AcquireAsync);
        gate.Lines.MaxPooled.Should().Be(1);

        CancelledWaitProbe.Collect();
        source.IsAlive.Should().BeFalse("a pooled node keeps neither the exception nor the token of its last wait");
        held.Dispose();
    }

    [Fact]
    public void CancelledPut_OnceObserved_DoesNotKeepItsItemReachableFromThePool()
    {
        // A waiting putter's node carries its item (the node's Value) until the put is served or leaves the line.
        var queue = new AsyncQueue<object>(maxSize: 1);
        queue.TryPut(new object()).Should().BeTrue(); // full: the next put waits
        (WeakReference item, WeakReference source) = CancelOneObservedPut(queue);
        queue.Lines.MaxPooled.Should().Be(1, "the putter's node went back to the pool");
        queue.Count.Should().Be(1, "the cancelled put added nothing");

        CancelledWaitProbe.Collect();
        item.IsAlive.Should().BeFalse("a pooled node must not keep the item its last, cancelled, put carried");
        source.IsAlive.Should().BeFalse();
        GC.KeepAlive(queue);
    }

    [Fact]
    public void ServedGet_OnceObserved_DoesNotKeepItsItemReachableFromThePool()
    {
        // A waiting getter's node is handed the item (the node's Value), which the getter then reads from it.
        var queue = new AsyncQueue<object>();
        WeakReference item = GetOneHandedItem(queue);
        queue.Lines.MaxPooled.Should().Be(1, "the getter's node went back to the pool");
        queue.Count.Should().Be(0);

        // The test dropped the item: only the queue, or the pooled node, could still hold it.
        CancelledWaitProbe.Collect();
        item.IsAlive.Should().BeFalse("a pooled node must not keep the item it handed to its last getter");
        GC.KeepAlive(queue);
    }

    // ---- misuse of the ValueTask ----

    [Fact]
    public async Task ResultOfAPendingWait_IsRejected_AndTheWaiterStaysInLine()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> pending = gate.AcquireAsync();
        ValueTaskAwaiter<AsyncLock.Releaser> awaiter = pending.GetAwaiter();

        FluentActions.Invoking(() => awaiter.GetResult()).Should().Throw<InvalidOperationException>();

        gate.Lines.MaxPooled.Should().Be(0, "a pending node is never recycled");
        gate.Lines.Waiting.Should().Be(1, "the misuse left the waiter in line");
        held.Dispose();
        (await pending.AsTask().WaitAsync(s_hang)).Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task ResultRequestedTwice_IsRejected_AndThePoolHoldsTheNodeOnce()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> pending = gate.AcquireAsync();
        held.Dispose();
        AsyncLock.Releaser releaser = await pending.AsTask().WaitAsync(s_hang);
        gate.Lines.MaxPooled.Should().Be(1);

        ValueTaskAwaiter<AsyncLock.Releaser> awaiter = pending.GetAwaiter();
        FluentActions.Invoking(() => awaiter.GetResult()).Should().Throw<InvalidOperationException>("a ValueTask may be awaited once");

        gate.Lines.MaxPooled.Should().Be(1, "the node is pooled once, not twice");
        ValueTask<AsyncLock.Releaser> first = gate.AcquireAsync();
        ValueTask<AsyncLock.Releaser> second = gate.AcquireAsync();
        gate.Lines.Waiting.Should().Be(2);
        releaser.Dispose();
        first.IsCompletedSuccessfully.Should().BeTrue();
        second.IsCompleted.Should().BeFalse("two waiters never share a node");
        (await first.AsTask().WaitAsync(s_hang)).Dispose();
        second.IsCompletedSuccessfully.Should().BeTrue();
        (await second.AsTask().WaitAsync(s_hang)).Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    // ---- floods of failed waits leave nothing behind ----

    [Fact]
    public async Task AsyncLock_AMillionImmediateFailuresAndManyTimedOutWaits_LeaveNothingBehind()
    {
        var time = new CountingTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();

        await FloodAsync(time, gate.AcquireAsync, gate.AcquireAsync, () => gate.Lines.Waiting);

        gate.Lines.Waiting.Should().Be(0);
        gate.Lines.MaxPooled.Should().BeInRange(1, WaitLines.PoolCapacity);
        time.ActiveTimers.Should().Be(0);
        gate.IsLocked.Should().BeTrue("only the original holder holds it");
        held.Dispose();
        gate.IsLocked.Should().BeFalse();
        gate.TryAcquire(out AsyncLock.Releaser again).Should().BeTrue();
        again.Dispose();
    }

    [Fact]
    public async Task AsyncSemaphore_AMillionImmediateFailuresAndManyTimedOutWaits_LeaveNothingBehind()
    {
        var time = new CountingTimeProvider();
        var semaphore = new AsyncSemaphore(0, maxCount: 2, timeProvider: time);

        await FloodAsync(time, semaphore.AcquireAsync, semaphore.AcquireAsync, () => semaphore.Lines.Waiting);

        semaphore.Lines.Waiting.Should().Be(0);
        semaphore.Lines.MaxPooled.Should().BeInRange(1, WaitLines.PoolCapacity);
        time.ActiveTimers.Should().Be(0);
        semaphore.CurrentCount.Should().Be(0, "no failed wait took or added a permit");
        semaphore.Release(2);
        semaphore.CurrentCount.Should().Be(2);
    }

    // ---- helpers ----

    /// <summary>
    /// Against a primitive with nothing to take: 500,000 zero-timeout and 500,000 pre-cancelled attempts (each must
    /// fail synchronously), then 100,000 queued waits that time out through <paramref name="time"/> and 100,000
    /// queued waits that are cancelled, in batches.
    /// </summary>
    private static async Task FloodAsync<TReleaser>(
        CountingTimeProvider time,
        Func<TimeSpan, CancellationToken, ValueTask<TReleaser>> acquireWithTimeout,
        Func<CancellationToken, ValueTask<TReleaser>> acquire,
        Func<int> waiterCount)
    {
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        int failedAtOnce = 0;
        for (int i = 0; i < 500_000; i++)
        {
            if (acquireWithTimeout(TimeSpan.Zero, default).IsFaulted)
            {
                failedAtOnce++;
            }

            if (acquire(cancelled.Token).IsCanceled)
            {
                failedAtOnce++;
            }
        }

        failedAtOnce.Should().Be(1_000_000);
        waiterCount().Should().Be(0);
        time.TimerCreations.Should().Be(0);

        const int Batch = 100;
        var waits = new ValueTask<TReleaser>[Batch];
        int timedOut = 0, cancelledWaits = 0;
        for (int round = 0; round < 1000; round++)
        {
            for (int i = 0; i < Batch; i++)
            {
                waits[i] = acquireWithTimeout(TimeSpan.FromSeconds(1), default);
            }

            waiterCount().Should().Be(Batch);
            time.Advance(TimeSpan.FromSeconds(1));
            waiterCount().Should().Be(0);
            timedOut += await CountFailuresAsync<TReleaser, TimeoutException>(waits);

            using var cts = new CancellationTokenSource();
            for (int i = 0; i < Batch; i++)
            {
                waits[i] = acquire(cts.Token);
            }

            cts.Cancel();
            waiterCount().Should().Be(0);
            cancelledWaits += await CountFailuresAsync<TReleaser, OperationCanceledException>(waits);
        }

        timedOut.Should().Be(100_000);
        cancelledWaits.Should().Be(100_000);
        time.TimerCreations.Should().Be(100_000);
    }

    /// <summary>A put of a new item that waits on the full <paramref name="queue"/>, cancelled and observed; weak
    /// references to the item and to the token source. (A method of its own, so that no local of the test holds either.)</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static (WeakReference Item, WeakReference Source) CancelOneObservedPut(AsyncQueue<object> queue)
    {
        var item = new object();
        WeakReference source = CancelledWaitProbe.CancelOneObservedWait(token => queue.PutAsync(item, token));
        return (new WeakReference(item), source);
    }

    /// <summary>A get that waits on the empty <paramref name="queue"/>, served a new item by a put and observed; a weak
    /// reference to the item.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference GetOneHandedItem(AsyncQueue<object> queue)
    {
        var item = new object();
        ValueTask<object> get = queue.GetAsync();
        get.IsCompleted.Should().BeFalse("the queue is empty: the get waits");
        queue.TryPut(item).Should().BeTrue();
        get.IsCompleted.Should().BeTrue("the put hands its item to the waiting get");
        get.GetAwaiter().GetResult().Should().BeSameAs(item);
        return new WeakReference(item);
    }

    private static async Task<int> CountFailuresAsync<TResult, TException>(ValueTask<TResult>[] waits)
        where TException : Exception
    {
        int failures = 0;
        foreach (ValueTask<TResult> wait in waits)
        {
            try
            {
                await wait.ConfigureAwait(false);
            }
            catch (TException)
            {
                failures++;
            }
        }

        return failures;
    }
}
