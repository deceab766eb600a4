using System.Reflection;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives.Tests.Internal;

/// <summary>
/// The shared wait engine (<see cref="WaitQueue{T}"/>, <see cref="WaitNode{T}"/>, and PermitPool through the
/// primitives): FIFO order, O(1) unlinking of waiters that give up, the outcome rule (whoever unlinks decides),
/// the bounded node pool, and that a flood of failed waits leaves nothing behind.
/// </summary>
public sealed class WaitQueueTests
{
    private static readonly TimeSpan s_hang = TimeSpan.FromSeconds(10);

    // ---- the queue itself ----

    [Fact]
    public void Dequeue_ReturnsWaitersInEnqueueOrderWithTheirPayloads()
    {
        var engine = new Engine();
        using (engine.Hold())
        {
            for (int i = 0; i < 5; i++)
            {
                engine.Queue.Enqueue(payload: 100 + i, kind: i % 2);
            }

            engine.Queue.Count.Should().Be(5);
            engine.Queue.Head!.Payload.Should().Be(100);
            for (int i = 0; i < 5; i++)
            {
                WaitNode<int> node = engine.Queue.Dequeue()!;
                node.Payload.Should().Be(100 + i);
                node.Kind.Should().Be(i % 2);
                node.IsQueued.Should().BeFalse();
            }

            engine.Queue.Dequeue().Should().BeNull();
            engine.Queue.IsEmpty.Should().BeTrue();
            engine.Queue.Count.Should().Be(0);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Abandon_OfAnyWaiter_UnlinksItAndKeepsTheOthersInOrder(int leaver)
    {
        var engine = new Engine();
        using var cts = new CancellationTokenSource();
        ValueTask<int>[] waits = new ValueTask<int>[3];
        for (int i = 0; i < 3; i++)
        {
            waits[i] = engine.Wait(payload: i, cancellationToken: i == leaver ? cts.Token : default);
        }

        cts.Cancel();

        engine.LeftCount.Should().Be(1, "the owner hears of every waiter that gives up");
        await FluentActions.Awaiting(() => waits[leaver].AsTask()).Should().ThrowAsync<OperationCanceledException>();
        using (engine.Hold())
        {
            engine.Queue.Count.Should().Be(2);
            var remaining = new List<int>();
            while (engine.Queue.Dequeue() is { } node)
            {
                remaining.Add(node.Payload);
            }

            remaining.Should().Equal(Enumerable.Range(0, 3).Where(i => i != leaver));
        }
    }

    [Fact]
    public void Enqueue_AfterTheQueueEmptiedByAbandons_LinksCorrectly()
    {
        var engine = new Engine();
        using var cts = new CancellationTokenSource();
        _ = engine.Wait(1, cancellationToken: cts.Token);
        _ = engine.Wait(2, cancellationToken: cts.Token);
        cts.Cancel();

        _ = engine.Wait(3);
        _ = engine.Wait(4);

        using (engine.Hold())
        {
            engine.Queue.Count.Should().Be(2);
            engine.Queue.Dequeue()!.Payload.Should().Be(3);
            engine.Queue.Dequeue()!.Payload.Should().Be(4);
            engine.Queue.IsEmpty.Should().BeTrue();
        }
    }

    [Fact]
    public async Task DrainWithError_FailsEveryWaiterOldestFirst()
    {
        var engine = new Engine();
        var waits = Enumerable.Range(0, 3).Select(i => engine.Wait(i)).ToArray();
        var error = new InvalidOperationException("shut down");

        engine.Complete((Engine e, ref Completions<int> completions) => e.Queue.DrainWithError(error, ref completions));

        engine.Queue.Count.Should().Be(0);
        foreach (ValueTask<int> wait in waits)
        {
            (await FluentActions.Awaiting(() => wait.AsTask().WaitAsync(s_hang)).Should().ThrowAsync<InvalidOperationException>())
                .Which.Should().BeSameAs(error);
        }
    }

    [Fact]
    public async Task DrainWithResult_CompletesEveryWaiterWithTheResult()
    {
        var engine = new Engine();
        var waits = Enumerable.Range(0, 3).Select(i => engine.Wait(i)).ToArray();

        engine.Complete((Engine e, ref Completions<int> completions) => e.Queue.DrainWithResult(42, ref completions));

        engine.Queue.Count.Should().Be(0);
        foreach (ValueTask<int> wait in waits)
        {
            (await wait.AsTask().WaitAsync(s_hang)).Should().Be(42);
        }
    }

    [Fact]
    public async Task Arm_AfterTheOutcomeWasDecided_KeepsThatOutcome()
    {
        // A grant may land between Enqueue and Arm; a token already cancelled at Arm must not undo it.
        var engine = new Engine();
        WaitNode<int> node;
        using (engine.Hold())
        {
            node = engine.Queue.Enqueue(7);
        }

        engine.Complete((Engine e, ref Completions<int> completions) =>
        {
            WaitNode<int> granted = e.Queue.Dequeue()!;
            granted.SetResult(99);
            completions.Add(granted);
        });
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        ValueTask<int> wait = engine.Queue.Arm(node, TimeSpan.FromSeconds(1), cts.Token);

        (await wait.AsTask().WaitAsync(s_hang)).Should().Be(99);
        engine.LeftCount.Should().Be(0, "the waiter never left: it was served");
        engine.Time.Advance(TimeSpan.FromSeconds(1));
        engine.Time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task Abandon_AfterTheGrant_ChangesNothing()
    {
        var engine = new Engine();
        using var cts = new CancellationTokenSource();
        ValueTask<int> wait = engine.Wait(1, TimeSpan.FromSeconds(1), cts.Token);

        engine.Complete((Engine e, ref Completions<int> completions) =>
        {
            WaitNode<int> granted = e.Queue.Dequeue()!;
            granted.SetResult(5);
            completions.Add(granted);
        });
        cts.Cancel();
        engine.Time.Advance(TimeSpan.FromSeconds(1));

        (await wait.AsTask().WaitAsync(s_hang)).Should().Be(5);
        engine.LeftCount.Should().Be(0);
        engine.Time.ActiveTimers.Should().Be(0);
    }

    // ---- node pool ----

    [Fact]
    public async Task GetResult_ReturnsTheNodeToThePool_AndTheNextWaitReusesIt()
    {
        var engine = new Engine();
        ValueTask<int> wait = engine.Wait(1);
        engine.GrantAll(10);
        (await wait).Should().Be(10);
        engine.Queue.PooledCount.Should().Be(1);

        ValueTask<int> next = engine.Wait(2);

        engine.Queue.PooledCount.Should().Be(0, "the node was reused");
        next.IsCompleted.Should().BeFalse("a reused node starts pending");
        engine.GrantAll(20);
        (await next).Should().Be(20);
    }

    [Fact]
    public async Task Return_KeepsAtMost32Nodes()
    {
        var engine = new Engine();
        var waits = Enumerable.Range(0, 100).Select(i => engine.Wait(i)).ToArray();
        engine.GrantAll(1);

        foreach (ValueTask<int> wait in waits)
        {
            await wait;
        }

        engine.Queue.PooledCount.Should().Be(32);
    }

    [Fact]
    public async Task GetResult_OfAWaitWithATimer_DoesNotRecycleTheNode()
    {
        // A late timer callback must never find its node serving another wait.
        var engine = new Engine();
        ValueTask<int> wait = engine.Wait(1, TimeSpan.FromSeconds(1));
        engine.GrantAll(3);

        (await wait).Should().Be(3);

        engine.Queue.PooledCount.Should().Be(0);
        engine.Time.ActiveTimers.Should().Be(0, "the timer was disposed");
    }

    [Fact]
    public async Task GetResult_BeforeCompletion_ThrowsAndTheWaitStillWorks()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> pending = gate.AcquireAsync();

        FluentActions.Invoking(() => BlockOn(pending)).Should().Throw<InvalidOperationException>();

        gate.WaiterCount.Should().Be(1, "the misuse left the waiter in line");
        held.Dispose();
        (await pending.AsTask().WaitAsync(s_hang)).Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task GetResult_Twice_ThrowsAndDoesNotCorruptThePool()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> pending = gate.AcquireAsync();
        held.Dispose();
        AsyncLock.Releaser releaser = await pending.AsTask().WaitAsync(s_hang);
        gate.PooledWaiters.Should().Be(1);

        FluentActions.Invoking(() => BlockOn(pending)).Should().Throw<InvalidOperationException>("a ValueTask may be awaited once");

        gate.PooledWaiters.Should().Be(1, "the node is pooled once, not twice");
        ValueTask<AsyncLock.Releaser> first = gate.AcquireAsync();
        ValueTask<AsyncLock.Releaser> second = gate.AcquireAsync();
        gate.WaiterCount.Should().Be(2);
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
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();

        await FloodAsync(time, gate.AcquireAsync, gate.AcquireAsync, () => gate.WaiterCount);

        gate.WaiterCount.Should().Be(0);
        gate.PooledWaiters.Should().BeInRange(1, 32);
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
        var time = new ManualTimeProvider();
        var semaphore = new AsyncSemaphore(0, maxCount: 2, timeProvider: time);

        await FloodAsync(time, semaphore.AcquireAsync, semaphore.AcquireAsync, () => semaphore.WaiterCount);

        semaphore.WaiterCount.Should().Be(0);
        semaphore.PooledWaiters.Should().BeInRange(1, 32);
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
        ManualTimeProvider time,
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

    private static T BlockOn<T>(ValueTask<T> pending) => pending.Result;
}
