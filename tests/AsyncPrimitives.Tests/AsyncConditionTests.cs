using AsyncPrimitives.Tests.Support;
using static AsyncPrimitives.Tests.Support.Settle;

namespace AsyncPrimitives.Tests;

/// <summary>
/// AsyncCondition: the behaviour Toro's test_condition.py, tornado's ConditionTest and CPython's asyncio
/// ConditionTests check (FIFO notify, notify(n) skipping timed-out waiters, notify_all, wait_for, the lock held again
/// after a cancelled or timed-out wait, notifications not lost to cancellation), plus the AsyncTools contract.
/// </summary>
public sealed class AsyncConditionTests
{
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(10);

    /// <summary>True only on the test's own thread while it is inside Notify(): a continuation that sees it ran inline.</summary>
    [ThreadStatic]
    private static bool t_insideNotify;

    private enum Outcome
    {
        Notified,
        TimedOut,
        Canceled,
    }

    [Fact]
    public void Constructor_Default_IsUnlockedWithNoWaiters()
    {
        var condition = new AsyncCondition();

        condition.IsLocked.Should().BeFalse();
        condition.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task WaitAsync_WithoutHoldingTheLock_ThrowsSynchronizationLockException()
    {
        var condition = new AsyncCondition();

        FluentActions.Invoking(() => condition.WaitAsync()).Should().Throw<SynchronizationLockException>();
        FluentActions.Invoking(() => condition.WaitAsync(TimeSpan.FromSeconds(1))).Should().Throw<SynchronizationLockException>();
        FluentActions.Invoking(() => condition.WaitUntilAsync(() => false)).Should().Throw<SynchronizationLockException>();
        FluentActions.Invoking(() => condition.WaitUntilAsync(() => true, TimeSpan.FromSeconds(1))).Should().Throw<SynchronizationLockException>();
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeFalse();

        // And after a wait, the lock is usable as ever.
        using (await condition.AcquireAsync())
        {
            condition.IsLocked.Should().BeTrue();
        }
    }

    [Fact]
    public void Release_WhenUnlocked_ThrowsSynchronizationLockException()
    {
        var condition = new AsyncCondition();

        FluentActions.Invoking(condition.Release).Should().Throw<SynchronizationLockException>();
    }

    [Fact]
    public async Task AcquireAsync_WhenHeld_TimesOutWithTheTimeProvider()
    {
        var time = new FakeTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        using AsyncLock.Releaser held = await condition.AcquireAsync();

        Task<AsyncLock.Releaser> second = condition.AcquireAsync(TimeSpan.FromSeconds(1)).AsTask();
        time.Advance(TimeSpan.FromSeconds(1));

        await ThrowsSoon<TimeoutException>(second);
        condition.IsLocked.Should().BeTrue();
    }

    [Fact]
    public async Task WaitAsync_Notified_ReleasesTheLockWhileWaitingAndReturnsHoldingIt()
    {
        var condition = new AsyncCondition();
        await condition.AcquireAsync();

        Task wait = condition.WaitAsync().AsTask();

        condition.IsLocked.Should().BeFalse("the lock is released while waiting");
        condition.Lines.Waiting.Should().Be(1);
        condition.Notify();
        await wait.WaitAsync(s_bound);
        condition.IsLocked.Should().BeTrue("the lock is held again when the wait returns");
        condition.Release();
        condition.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task WaitAsync_NotifiedWhileTheNotifierHoldsTheLock_ReturnsOnlyAfterTheNotifierReleases()
    {
        var gate = new AsyncLock();
        var condition = new AsyncCondition(gate);
        await condition.AcquireAsync();
        Task wait = condition.WaitAsync().AsTask();

        AsyncLock.Releaser notifier = await condition.AcquireAsync();
        condition.Notify();
        gate.Lines.Waiting.Should().Be(1, "the woken waiter went straight to the lock's line");

        wait.IsCompleted.Should().BeFalse();
        notifier.Dispose();
        await wait.WaitAsync(s_bound);
        condition.IsLocked.Should().BeTrue();
        condition.Release();
    }

    [Fact]
    public async Task Notify_One_WakesWaitersInFifoOrder()
    {
        var condition = new AsyncCondition();
        var woken = new List<int>();
        Task<Outcome>[] waiters = Enumerable.Range(0, 5).Select(i => WaitOnce(condition, onWake: () => woken.Add(i))).ToArray();
        condition.Lines.Waiting.Should().Be(5);

        for (int i = 0; i < 5; i++)
        {
            condition.Notify(1);
            (await waiters[i].WaitAsync(s_bound)).Should().Be(Outcome.Notified);
            woken.Should().Equal(Enumerable.Range(0, i + 1));
            condition.Lines.Waiting.Should().Be(4 - i);
        }
    }

    [Fact]
    public async Task Notify_N_WakesTheNOldestWaiters()
    {
        var condition = new AsyncCondition();
        Task<Outcome>[] waiters = Enumerable.Range(0, 6).Select(_ => WaitOnce(condition)).ToArray();

        condition.Notify(3);
        await Task.WhenAll(waiters[..3]).WaitAsync(s_bound);
        condition.Lines.Waiting.Should().Be(3);
        waiters[3..].Should().OnlyContain(t => !t.IsCompleted);

        condition.Notify(1);
        await waiters[3].WaitAsync(s_bound);
        condition.Lines.Waiting.Should().Be(2);

        condition.Notify(2);
        await Task.WhenAll(waiters[4..]).WaitAsync(s_bound);
        condition.Lines.Waiting.Should().Be(0);
        waiters.Should().OnlyContain(t => t.Result == Outcome.Notified);
        condition.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task Notify_Three_TheyGetTheLockBackInNotifyOrder_AheadOfLaterRequests()
    {
        // asyncio and tornado: Notify(3) wakes waiters 0, 1, 2, and they hold the lock again in that order.
        var gate = new AsyncLock();
        var condition = new AsyncCondition(gate);
        var order = new List<int>();
        Task<Outcome>[] waiters = Enumerable.Range(0, 3).Select(i => WaitOnce(condition, onWake: () => order.Add(i))).ToArray();
        Task late;
        using (await condition.AcquireAsync())
        {
            condition.Notify(3);

            condition.Lines.Waiting.Should().Be(0);
            gate.Lines.Waiting.Should().Be(3, "the notified waiters went straight to the lock's line");
            late = AcquireAndRecordAsync();
        }

        await Task.WhenAll(waiters.Append(late)).WaitAsync(s_bound);
        order.Should().Equal(0, 1, 2, 99);

        async Task AcquireAndRecordAsync()
        {
            using (await condition.AcquireAsync())
            {
                order.Add(99);
            }
        }
    }

    [Fact]
    public async Task WaitAsync_TimedOut_RejoinsTheLockLineAtTheMomentItTimedOut()
    {
        var time = new FakeTimeProvider();
        var gate = new AsyncLock(time);
        var condition = new AsyncCondition(gate, time);
        var order = new List<string>();
        Task timedOut = WaitAndRecordAsync();
        AsyncLock.Releaser held = await condition.AcquireAsync();
        Task early = AcquireAndRecordAsync("early");

        time.Advance(TimeSpan.FromSeconds(1));
        gate.Lines.Waiting.Should().Be(2, "the timed-out waiter queued for the lock behind the earlier request");
        Task late = AcquireAndRecordAsync("late");
        held.Dispose();

        await Task.WhenAll(timedOut, early, late).WaitAsync(s_bound);
        order.Should().Equal("early", "timed out", "late");
        condition.IsLocked.Should().BeFalse();

        async Task WaitAndRecordAsync()
        {
            await condition.AcquireAsync();
            try
            {
                await condition.WaitAsync(TimeSpan.FromSeconds(1));
            }
            catch (TimeoutException)
            {
                order.Add("timed out");
            }
            finally
            {
                condition.Release();
            }
        }

        async Task AcquireAndRecordAsync(string name)
        {
            using (await condition.AcquireAsync())
            {
                order.Add(name);
            }
        }
    }

    [Fact]
    public async Task Notify_Two_WakesExactlyTheTwoOldestLiveWaiters()
    {
        // Toro test_notify_n_with_timeout: a timed-out waiter does not count against notify(n).
        var time = new FakeTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        Task<Outcome> w0 = WaitOnce(condition);
        Task<Outcome> w1 = WaitOnce(condition, TimeSpan.FromSeconds(1));
        Task<Outcome> w2 = WaitOnce(condition);
        Task<Outcome> w3 = WaitOnce(condition);

        time.Advance(TimeSpan.FromSeconds(1));
        (await w1.WaitAsync(s_bound)).Should().Be(Outcome.TimedOut);
        condition.Lines.Waiting.Should().Be(3);

        condition.Notify(2);

        (await Task.WhenAll(w0, w2).WaitAsync(s_bound)).Should().OnlyContain(o => o == Outcome.Notified);
        condition.Lines.Waiting.Should().Be(1);
        w3.IsCompleted.Should().BeFalse();

        condition.Notify();
        (await w3.WaitAsync(s_bound)).Should().Be(Outcome.Notified);
        condition.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task Notify_Two_SkipsCancelledWaiters()
    {
        var condition = new AsyncCondition();
        using var cts = new CancellationTokenSource();
        Task<Outcome> w0 = WaitOnce(condition, cancellationToken: cts.Token);
        Task<Outcome> w1 = WaitOnce(condition);
        Task<Outcome> w2 = WaitOnce(condition);
        Task<Outcome> w3 = WaitOnce(condition);

        cts.Cancel();
        (await w0.WaitAsync(s_bound)).Should().Be(Outcome.Canceled);
        condition.Notify(2);

        (await Task.WhenAll(w1, w2).WaitAsync(s_bound)).Should().OnlyContain(o => o == Outcome.Notified);
        condition.Lines.Waiting.Should().Be(1);
        w3.IsCompleted.Should().BeFalse();
        condition.NotifyAll();
        (await w3.WaitAsync(s_bound)).Should().Be(Outcome.Notified);
    }

    [Fact]
    public async Task NotifyAll_WakesEveryLiveWaiter()
    {
        // Toro test_notify_all_with_timeout.
        var time = new FakeTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        Task<Outcome> w0 = WaitOnce(condition);
        Task<Outcome> w1 = WaitOnce(condition, TimeSpan.FromSeconds(1));
        Task<Outcome>[] rest = Enumerable.Range(0, 4).Select(_ => WaitOnce(condition)).ToArray();

        time.Advance(TimeSpan.FromSeconds(1));
        (await w1.WaitAsync(s_bound)).Should().Be(Outcome.TimedOut);

        condition.NotifyAll();

        (await Task.WhenAll(rest.Append(w0)).WaitAsync(s_bound)).Should().OnlyContain(o => o == Outcome.Notified);
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task Notify_IsNotStored_ALaterWaiterStillWaits()
    {
        var condition = new AsyncCondition();
        Task<Outcome> early = WaitOnce(condition);

        condition.Notify(5);
        condition.NotifyAll();
        (await early.WaitAsync(s_bound)).Should().Be(Outcome.Notified);
        Task<Outcome> late = WaitOnce(condition);

        condition.Lines.Waiting.Should().Be(1);
        late.IsCompleted.Should().BeFalse();
        condition.Notify();
        (await late.WaitAsync(s_bound)).Should().Be(Outcome.Notified);
    }

    [Fact]
    public async Task Notify_Zero_DoesNothing()
    {
        var condition = new AsyncCondition();
        Task<Outcome> waiter = WaitOnce(condition);

        condition.Notify(0);

        condition.Lines.Waiting.Should().Be(1);
        waiter.IsCompleted.Should().BeFalse();
        condition.Notify();
        await waiter.WaitAsync(s_bound);
    }

    [Fact]
    public void Notify_NoWaiters_DoesNothing()
    {
        var condition = new AsyncCondition();

        condition.Notify();
        condition.Notify(10);
        condition.NotifyAll();

        condition.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public void Notify_NegativeCount_ThrowsArgumentOutOfRange()
    {
        var condition = new AsyncCondition();

        FluentActions.Invoking(() => condition.Notify(-1))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("count");
    }

    [Fact]
    public async Task Notify_FromAWokenWaiter_WakesTheNext()
    {
        // tornado test_nested_notify: a waiter that notifies when woken passes the wake-up along the line.
        var condition = new AsyncCondition();
        var woken = new List<int>();
        Task<Outcome>[] waiters = Enumerable.Range(0, 3)
            .Select(i => WaitOnce(condition, onWake: () => { woken.Add(i); condition.Notify(); }))
            .ToArray();

        condition.Notify();

        await Task.WhenAll(waiters).WaitAsync(s_bound);
        woken.Should().Equal(0, 1, 2);
    }

    [Fact]
    public async Task WaitAsync_Timeout_ThrowsAfterReacquiringTheLock()
    {
        var time = new CountingTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        await condition.AcquireAsync();

        Task wait = condition.WaitAsync(TimeSpan.FromSeconds(1)).AsTask();
        condition.IsLocked.Should().BeFalse();
        time.Advance(TimeSpan.FromMilliseconds(999));
        condition.Lines.Waiting.Should().Be(1);
        time.Advance(TimeSpan.FromMilliseconds(1));

        await ThrowsSoon<TimeoutException>(wait);
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeTrue("the lock is held again after a timed-out wait");
        condition.Release();
        condition.IsLocked.Should().BeFalse();
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task WaitAsync_NotifiedBeforeTimeout_Returns()
    {
        // Toro test_wait_timeout_preempted.
        var time = new FakeTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        await condition.AcquireAsync();
        Task wait = condition.WaitAsync(TimeSpan.FromSeconds(2)).AsTask();

        time.Advance(TimeSpan.FromSeconds(1));
        condition.Notify();

        await wait.WaitAsync(s_bound);
        time.Advance(TimeSpan.FromSeconds(5));
        condition.IsLocked.Should().BeTrue();
        condition.Release();
    }

    [Fact]
    public async Task WaitAsync_Cancelled_ThrowsAfterReacquiringTheLock()
    {
        // asyncio test_wait_cancel.
        var condition = new AsyncCondition();
        using var cts = new CancellationTokenSource();
        await condition.AcquireAsync();

        Task wait = condition.WaitAsync(cts.Token).AsTask();
        cts.Cancel();

        (await ThrowsSoon<OperationCanceledException>(wait)).CancellationToken.Should().Be(cts.Token);
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeTrue("the lock is held again after a cancelled wait");
        condition.Release();
    }

    [Fact]
    public async Task WaitAsync_CancelledWhileTheLockIsContended_ThrowsOnlyOnceItHoldsTheLockAgain()
    {
        // asyncio test_wait_cancel_contested.
        var gate = new AsyncLock();
        var condition = new AsyncCondition(gate);
        using var cts = new CancellationTokenSource();
        await condition.AcquireAsync();
        Task wait = condition.WaitAsync(cts.Token).AsTask();
        AsyncLock.Releaser other = await condition.AcquireAsync();

        cts.Cancel();
        gate.Lines.Waiting.Should().Be(1, "the cancelled waiter queued at once to get the lock back");

        wait.IsCompleted.Should().BeFalse("the wait must not end before it holds the lock again");
        other.Dispose();
        await ThrowsSoon<OperationCanceledException>(wait);
        condition.IsLocked.Should().BeTrue();
        condition.Release();
    }

    [Fact]
    public async Task WaitAsync_TimedOutWhileTheLockIsContended_ThrowsOnlyOnceItHoldsTheLockAgain()
    {
        // asyncio test_timeout_in_block: the timeout covers the wait, not getting the lock back.
        var time = new FakeTimeProvider();
        var gate = new AsyncLock(time);
        var condition = new AsyncCondition(gate, time);
        await condition.AcquireAsync();
        Task wait = condition.WaitAsync(TimeSpan.FromSeconds(1)).AsTask();
        AsyncLock.Releaser other = await condition.AcquireAsync();

        time.Advance(TimeSpan.FromSeconds(10));
        gate.Lines.Waiting.Should().Be(1, "the timed-out waiter queued at once to get the lock back");

        wait.IsCompleted.Should().BeFalse();
        other.Dispose();
        await ThrowsSoon<TimeoutException>(wait);
        condition.IsLocked.Should().BeTrue();
        condition.Release();
    }

    [Fact]
    public async Task WaitAsync_PreCancelledToken_FailsAtOnceKeepingTheLock()
    {
        var condition = new AsyncCondition();
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        await condition.AcquireAsync();

        ValueTask wait = condition.WaitAsync(cts.Token);
        ValueTask timed = condition.WaitAsync(TimeSpan.FromSeconds(1), cts.Token);
        ValueTask until = condition.WaitUntilAsync(() => false, cts.Token);

        wait.IsCanceled.Should().BeTrue();
        timed.IsCanceled.Should().BeTrue();
        until.IsCanceled.Should().BeTrue();
        await FluentActions.Awaiting(() => wait.AsTask()).Should().ThrowAsync<OperationCanceledException>();
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeTrue();
        condition.Release();
    }

    [Fact]
    public async Task WaitAsync_ZeroTimeout_TimesOutAtOnceKeepingTheLock()
    {
        var time = new CountingTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        await condition.AcquireAsync();

        ValueTask wait = condition.WaitAsync(TimeSpan.Zero);

        wait.IsFaulted.Should().BeTrue();
        wait.AsTask().Exception!.InnerException.Should().BeOfType<TimeoutException>();
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeTrue();
        time.TimerCreations.Should().Be(0);
        condition.Release();
    }

    public static TheoryData<TimeSpan> InvalidTimeouts => new()
    {
        TimeSpan.FromMilliseconds(-2),
        TimeSpan.FromTicks(-1),
        TimeSpan.MinValue,
        TimeSpan.MaxValue,
    };

    [Theory]
    [MemberData(nameof(InvalidTimeouts))]
    public async Task WaitAsync_InvalidTimeout_ThrowsArgumentOutOfRange(TimeSpan timeout)
    {
        var condition = new AsyncCondition();
        await condition.AcquireAsync();

        FluentActions.Invoking(() => condition.WaitAsync(timeout))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
        FluentActions.Invoking(() => condition.WaitUntilAsync(() => false, timeout))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
        FluentActions.Invoking(() => condition.AcquireAsync(timeout))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
        condition.IsLocked.Should().BeTrue();
        condition.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task Notify_RacingTimeout_IsReceivedOrPassedToTheNextWaiter()
    {
        for (int i = 0; i < 300; i++)
        {
            var time = new FakeTimeProvider();
            var condition = new AsyncCondition(timeProvider: time);
            Task<Outcome> first = WaitOnce(condition, TimeSpan.FromSeconds(1));
            Task<Outcome> second = WaitOnce(condition);

            await RunTogether(() => time.Advance(TimeSpan.FromSeconds(1)), () => condition.Notify());

            Outcome outcome = await first.WaitAsync(s_bound);
            outcome.Should().NotBe(Outcome.Canceled);
            int wakes = (outcome == Outcome.Notified ? 1 : 0) + (condition.Lines.Waiting == 0 ? 1 : 0);
            wakes.Should().Be(1, "the one notification wakes exactly one waiter (iteration {0}, first {1})", i, outcome);
            condition.NotifyAll();
            (await second.WaitAsync(s_bound)).Should().Be(Outcome.Notified);
            condition.IsLocked.Should().BeFalse();
        }
    }

    [Fact]
    public async Task Notify_RacingCancellation_IsReceivedOrPassedToTheNextWaiter()
    {
        // asyncio test_wait_cancel_after_notify / test_cancelled_wakeup: the wake-up is never lost.
        for (int i = 0; i < 300; i++)
        {
            var condition = new AsyncCondition();
            using var cts = new CancellationTokenSource();
            Task<Outcome> first = WaitOnce(condition, cancellationToken: cts.Token);
            Task<Outcome> second = WaitOnce(condition);

            await RunTogether(cts.Cancel, () => condition.Notify());

            Outcome outcome = await first.WaitAsync(s_bound);
            outcome.Should().NotBe(Outcome.TimedOut);
            int wakes = (outcome == Outcome.Notified ? 1 : 0) + (condition.Lines.Waiting == 0 ? 1 : 0);
            wakes.Should().Be(1, "the one notification wakes exactly one waiter (iteration {0}, first {1})", i, outcome);
            condition.NotifyAll();
            (await second.WaitAsync(s_bound)).Should().Be(Outcome.Notified);
            condition.IsLocked.Should().BeFalse();
        }
    }

    [Fact]
    public async Task WaitUntilAsync_PredicateAlreadyTrue_CompletesSynchronouslyKeepingTheLock()
    {
        var condition = new AsyncCondition();
        await condition.AcquireAsync();
        int calls = 0;

        ValueTask wait = condition.WaitUntilAsync(() => ++calls > 0);
        ValueTask timed = condition.WaitUntilAsync(() => ++calls > 0, TimeSpan.Zero);

        wait.IsCompletedSuccessfully.Should().BeTrue();
        timed.IsCompletedSuccessfully.Should().BeTrue();
        calls.Should().Be(2);
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeTrue();
        condition.Release();
    }

    [Fact]
    public async Task WaitUntilAsync_ChecksThePredicateAfterEachNotify()
    {
        // asyncio test_wait_for.
        var condition = new AsyncCondition();
        bool ready = false;
        int calls = 0;
        await condition.AcquireAsync();

        Task wait = condition.WaitUntilAsync(() =>
        {
            Interlocked.Increment(ref calls);
            return Volatile.Read(ref ready);
        }).AsTask();
        Volatile.Read(ref calls).Should().Be(1, "the predicate is checked first");
        condition.IsLocked.Should().BeFalse();

        condition.Notify();
        await WaitUntil(() => Volatile.Read(ref calls) == 2 && condition.Lines.Waiting == 1);
        wait.IsCompleted.Should().BeFalse();

        using (await condition.AcquireAsync())
        {
            Volatile.Write(ref ready, true);
            condition.Notify();
        }

        await wait.WaitAsync(s_bound);
        Volatile.Read(ref calls).Should().Be(3);
        condition.IsLocked.Should().BeTrue();
        condition.Release();
    }

    [Fact]
    public async Task WaitUntilAsync_Timeout_IsOneOverallDeadline()
    {
        var time = new CountingTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        int calls = 0;
        await condition.AcquireAsync();
        Task wait = condition.WaitUntilAsync(() => Interlocked.Increment(ref calls) < 0, TimeSpan.FromSeconds(5)).AsTask();

        time.Advance(TimeSpan.FromSeconds(3));
        condition.Notify();
        await WaitUntil(() => Volatile.Read(ref calls) == 2 && condition.Lines.Waiting == 1);

        time.Advance(TimeSpan.FromMilliseconds(1999));
        condition.Lines.Waiting.Should().Be(1, "2 s of the 5 s were left after the notification");
        time.Advance(TimeSpan.FromMilliseconds(1));
        condition.Lines.Waiting.Should().Be(0);

        await ThrowsSoon<TimeoutException>(wait);
        condition.IsLocked.Should().BeTrue();
        condition.Release();
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task WaitUntilAsync_TimedOut_ReturnsNormally_WhenThePredicateIsTrueOnceTheLockIsHeldAgain()
    {
        var time = new CountingTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        bool ready = false;
        await condition.AcquireAsync();
        Task wait = condition.WaitUntilAsync(() => Volatile.Read(ref ready), TimeSpan.FromSeconds(5)).AsTask();

        await condition.AcquireAsync().AsTask().WaitAsync(s_bound); // the waiter released the lock; this holds it now
        Volatile.Write(ref ready, true); // changed without a notification
        time.Advance(TimeSpan.FromSeconds(5)); // the waiter's time is up: it queues for the lock
        await WaitUntil(() => condition.Lines.Waiting == 0);
        wait.IsCompleted.Should().BeFalse("the waiter needs the lock back first");

        condition.Release();
        await wait.WaitAsync(s_bound); // no TimeoutException: the predicate held when it looked, lock in hand
        condition.IsLocked.Should().BeTrue();
        condition.Release();
    }

    [Fact]
    public async Task WaitUntilAsync_CalledUnderASynchronizationContext_ChecksThePredicateAgainWithoutPostingToIt()
    {
        // The re-checks between notifications are the library's own steps: they never wait for the caller's context
        // (a UI thread blocked on the returned task would deadlock them). Only the caller's own await resumes there.
        var condition = new AsyncCondition();
        var context = new CountingContext();
        bool ready = false;
        int calls = 0;
        await condition.AcquireAsync();

        Task wait;
        SynchronizationContext? previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(context);
        try
        {
            wait = condition.WaitUntilAsync(() =>
            {
                Interlocked.Increment(ref calls);
                return Volatile.Read(ref ready);
            }).AsTask();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        condition.Notify();
        await WaitUntil(() => Volatile.Read(ref calls) == 2 && condition.Lines.Waiting == 1);
        using (await condition.AcquireAsync())
        {
            Volatile.Write(ref ready, true);
            condition.Notify();
        }

        await wait.WaitAsync(s_bound);
        Volatile.Read(ref calls).Should().Be(3);
        context.Posts.Should().Be(0, "no step of the wait was posted to the caller's context");
        condition.IsLocked.Should().BeTrue();
        condition.Release();
    }

    [Fact]
    public async Task WaitUntilAsync_DeadlinePassedWhileReacquiringTheLock_TimesOutAtOnceHoldingTheLock()
    {
        var time = new CountingTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        int calls = 0;
        await condition.AcquireAsync();
        Task wait = condition.WaitUntilAsync(() => Interlocked.Increment(ref calls) < 0, TimeSpan.FromSeconds(5)).AsTask();
        condition.Lines.Waiting.Should().Be(1);

        // Notified in time, but the notifier keeps the lock past the whole deadline.
        using (await condition.AcquireAsync())
        {
            condition.Notify();
            time.Advance(TimeSpan.FromSeconds(6));
        }

        // Back with the lock, the predicate is still false and no time is left: the wait ends at once, without
        // waiting for another notification or for the clock to move again.
        await ThrowsSoon<TimeoutException>(wait);
        Volatile.Read(ref calls).Should().Be(2, "the predicate is checked first and once after the notification");
        condition.IsLocked.Should().BeTrue();
        condition.Lines.Waiting.Should().Be(0);
        condition.Release();
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task WaitUntilAsync_Cancelled_ThrowsAfterReacquiringTheLock()
    {
        var condition = new AsyncCondition();
        using var cts = new CancellationTokenSource();
        await condition.AcquireAsync();
        Task wait = condition.WaitUntilAsync(() => false, cts.Token).AsTask();

        cts.Cancel();

        await ThrowsSoon<OperationCanceledException>(wait);
        condition.IsLocked.Should().BeTrue();
        condition.Lines.Waiting.Should().Be(0);
        condition.Release();
    }

    [Fact]
    public async Task WaitUntilAsync_NullPredicate_ThrowsArgumentNull()
    {
        var condition = new AsyncCondition();
        await condition.AcquireAsync();

        FluentActions.Invoking(() => condition.WaitUntilAsync(null!))
            .Should().Throw<ArgumentNullException>().Which.ParamName.Should().Be("predicate");
        FluentActions.Invoking(() => condition.WaitUntilAsync(null!, TimeSpan.FromSeconds(1)))
            .Should().Throw<ArgumentNullException>().Which.ParamName.Should().Be("predicate");
        condition.Release();
    }

    [Fact]
    public async Task SharedLock_TwoConditions_NotifyOnlyTheirOwnWaiters()
    {
        var gate = new AsyncLock();
        var notEmpty = new AsyncCondition(gate);
        var notFull = new AsyncCondition(gate);
        Task<Outcome> onNotEmpty = WaitOnce(notEmpty);
        Task<Outcome> onNotFull = WaitOnce(notFull);
        notEmpty.Lines.Waiting.Should().Be(1);
        notFull.Lines.Waiting.Should().Be(1);

        notFull.Notify();

        (await onNotFull.WaitAsync(s_bound)).Should().Be(Outcome.Notified);
        notEmpty.Lines.Waiting.Should().Be(1);
        onNotEmpty.IsCompleted.Should().BeFalse();

        using (await notFull.AcquireAsync())
        {
            notEmpty.IsLocked.Should().BeTrue("both conditions share one lock");
            gate.IsLocked.Should().BeTrue();
            notEmpty.NotifyAll();
        }

        (await onNotEmpty.WaitAsync(s_bound)).Should().Be(Outcome.Notified);
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task Notify_NeverRunsAWaitersContinuationInline()
    {
        var condition = new AsyncCondition();
        Task<bool> waiter = WaitAndReportInline(condition);

        t_insideNotify = true;
        try
        {
            condition.Notify();
        }
        finally
        {
            t_insideNotify = false;
        }

        (await waiter.WaitAsync(s_bound)).Should().BeFalse("Notify must not run the waiter's continuation on its own stack");
    }

    [Fact]
    public async Task NotifyAll_NeverRunsAWaitersContinuationInline()
    {
        var condition = new AsyncCondition();
        Task<bool>[] waiters = Enumerable.Range(0, 3).Select(_ => WaitAndReportInline(condition)).ToArray();

        t_insideNotify = true;
        try
        {
            condition.NotifyAll();
        }
        finally
        {
            t_insideNotify = false;
        }

        (await Task.WhenAll(waiters).WaitAsync(s_bound)).Should().OnlyContain(inline => !inline);
    }

    [Fact]
    public async Task WaitAsync_ManyTimedOutWaiters_LeaveNothingBehind()
    {
        // tornado test_garbage_collection: timed-out waiters are removed, not kept until the next notify.
        var time = new CountingTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        Task<Outcome>[] waiters = Enumerable.Range(0, 100).Select(_ => WaitOnce(condition, TimeSpan.FromSeconds(1))).ToArray();
        condition.Lines.Waiting.Should().Be(100);

        time.Advance(TimeSpan.FromSeconds(1));

        (await Task.WhenAll(waiters).WaitAsync(s_bound)).Should().OnlyContain(o => o == Outcome.TimedOut);
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeFalse();
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task ToString_ShowsLockStateAndWaiters()
    {
        var condition = new AsyncCondition();
        condition.ToString().Should().Be("AsyncCondition(unlocked, waiters=0)");

        Task<Outcome> waiter = WaitOnce(condition);
        condition.ToString().Should().Be("AsyncCondition(unlocked, waiters=1)");

        using (await condition.AcquireAsync())
        {
            condition.ToString().Should().Be("AsyncCondition(locked, waiters=1)");
            condition.Notify();
        }

        await waiter.WaitAsync(s_bound);
        condition.ToString().Should().Be("AsyncCondition(unlocked, waiters=0)");
    }

    [Fact]
    public async Task ToString_WithAName_ShowsItFirst()
    {
        var condition = new AsyncCondition { Name = "orders-ready" };
        condition.Name.Should().Be("orders-ready");
        using (await condition.AcquireAsync())
        {
            condition.ToString().Should().Be("AsyncCondition(name=\"orders-ready\", locked, waiters=0)");
        }

        new AsyncCondition().Name.Should().BeNull();
    }

    [Fact]
    public async Task ProducersAndConsumers_WithTimeoutsAndCancellations_ConsumeEveryItem()
    {
        // Rounds: producers add items (each with one Notify) while a ticker drives the consumers' timeouts and
        // cancellations on a manual clock; then the clock stops, and every item must still be consumed. With the clock
        // stopped only notifications wake a consumer, so a wake-up lost to a racing timeout or cancellation leaves an
        // item behind and the round never finishes (the test fails at the bound).
        const int Rounds = 100, Producers = 2, PerProducer = 20, Consumers = 4;
        var time = new FakeTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        int items = 0, consumed = 0, produced = 0; // guarded by the condition's lock
        int timeouts = 0, cancellations = 0;
        bool done = false;
        bool Ready() => items > 0 || done;

        Task[] consumers = Enumerable.Range(0, Consumers).Select(c => Task.Run(async () =>
        {
            var rng = new Random(c);
            while (true)
            {
                using CancellationTokenSource? cts = rng.Next(4) == 0
                    ? new CancellationTokenSource(TimeSpan.FromMilliseconds(rng.Next(0, 3)), time)
                    : null;
                CancellationToken token = cts?.Token ?? CancellationToken.None;
                using (await condition.AcquireAsync())
                {
                    try
                    {
                        if (rng.Next(2) == 0)
                        {
                            await condition.WaitUntilAsync(Ready, TimeSpan.FromMilliseconds(rng.Next(0, 4)), token);
                        }
                        else
                        {
                            await condition.WaitUntilAsync(Ready, token);
                        }
                    }
                    catch (TimeoutException)
                    {
                        timeouts++;
                        continue; // the lock is held again: the using releases it; retry
                    }
                    catch (OperationCanceledException)
                    {
                        cancellations++;
                        continue;
                    }

                    if (items == 0)
                    {
                        return; // done
                    }

                    items--;
                    consumed++;
                }
            }
        })).ToArray();

        for (int round = 0; round < Rounds; round++)
        {
            bool ticking = true;
            Task ticker = Task.Run(async () =>
            {
                while (Volatile.Read(ref ticking))
                {
                    time.Advance(TimeSpan.FromMilliseconds(1));
                    await Task.Yield();
                }
            });

            Task[] producers = Enumerable.Range(0, Producers).Select(p => Task.Run(async () =>
            {
                for (int i = 0; i < PerProducer; i++)
                {
                    using (await condition.AcquireAsync())
                    {
                        items++;
                        produced++;
                        condition.Notify();
                    }

                    await Task.Yield(); // keep the producers slower than the consumers, so consumers wait
                }
            })).ToArray();

            await Task.WhenAll(producers).WaitAsync(s_bound);
            Volatile.Write(ref ticking, false);
            await ticker.WaitAsync(s_bound);
            await WaitUntil(() => Volatile.Read(ref consumed) == Volatile.Read(ref produced));
        }

        using (await condition.AcquireAsync())
        {
            done = true;
            condition.NotifyAll();
        }

        await Task.WhenAll(consumers).WaitAsync(s_bound);
        consumed.Should().Be(Rounds * Producers * PerProducer);
        items.Should().Be(0);
        (timeouts + cancellations).Should().BeGreaterThan(0, "the stress must exercise timeouts and cancellations");
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeFalse();
    }

    /// <summary>
    /// Takes the lock, waits once, and releases the lock, reporting how the wait ended. Runs synchronously up to the
    /// wait, so the caller finds it in the line when this returns (the lock must be free). Releasing the lock in the
    /// finally block fails if the wait returned or threw without holding the lock again.
    /// </summary>
    private static async Task<Outcome> WaitOnce(
        AsyncCondition condition, TimeSpan? timeout = null, CancellationToken cancellationToken = default, Action? onWake = null)
    {
        await condition.AcquireAsync();
        try
        {
            await condition.WaitAsync(timeout ?? Timeout.InfiniteTimeSpan, cancellationToken);
            condition.IsLocked.Should().BeTrue();
            onWake?.Invoke();
            return Outcome.Notified;
        }
        catch (TimeoutException)
        {
            return Outcome.TimedOut;
        }
        catch (OperationCanceledException)
        {
            return Outcome.Canceled;
        }
        finally
        {
            condition.Release();
        }
    }

    private static async Task<bool> WaitAndReportInline(AsyncCondition condition)
    {
        await condition.AcquireAsync();
        try
        {
            await condition.WaitAsync();
            return t_insideNotify;
        }
        finally
        {
            condition.Release();
        }
    }

    /// <summary>Runs two actions on two pool threads, released together, and waits for both.</summary>
    private static async Task RunTogether(Action first, Action second)
    {
        using var barrier = new Barrier(2);
        Task a = Task.Run(() =>
        {
            barrier.SignalAndWait(s_bound);
            first();
        });
        Task b = Task.Run(() =>
        {
            barrier.SignalAndWait(s_bound);
            second();
        });
        await Task.WhenAll(a, b).WaitAsync(s_bound);
    }

    /// <summary>Waits (bounded) until <paramref name="condition"/> holds: for state another thread reaches asynchronously.</summary>
    private static async Task WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + s_bound;
        while (!condition())
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the expected state should have been reached");
            await Task.Yield();
        }
    }
}
