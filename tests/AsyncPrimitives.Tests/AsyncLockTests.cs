using AsyncPrimitives.Tests.Support;

namespace AsyncPrimitives.Tests;

/// <summary>
/// The AsyncLock contract: the behaviour Toro's test_lock.py, tornado's LockTests and CPython's asyncio LockTests
/// check, re-expressed for a thread-safe lock, plus the races where those originals lose the lock.
/// </summary>
public sealed class AsyncLockTests
{
    private static readonly TimeSpan s_hang = TimeSpan.FromSeconds(10);

    /// <summary>True on a thread while it is inside <see cref="AsyncLock.Release"/>; a continuation that sees it
    /// was run inline by the releaser.</summary>
    [ThreadStatic]
    private static bool t_insideRelease;

    // ---- acquire and release ----

    [Fact]
    public void AcquireAsync_WhenFree_CompletesSynchronouslyAndLocks()
    {
        var gate = new AsyncLock();
        gate.IsLocked.Should().BeFalse();

        ValueTask<AsyncLock.Releaser> acquire = gate.AcquireAsync();

        acquire.IsCompletedSuccessfully.Should().BeTrue();
        gate.IsLocked.Should().BeTrue();
        Granted(acquire).Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public void AcquireAsync_WithTimeout_WhenFree_CompletesSynchronouslyWithoutATimer()
    {
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);

        ValueTask<AsyncLock.Releaser> acquire = gate.AcquireAsync(TimeSpan.FromSeconds(5));

        acquire.IsCompletedSuccessfully.Should().BeTrue();
        time.TimerCreations.Should().Be(0);
        Granted(acquire).Dispose();

        ValueTask<AsyncLock.Releaser> zero = gate.AcquireAsync(TimeSpan.Zero);
        zero.IsCompletedSuccessfully.Should().BeTrue();
        gate.IsLocked.Should().BeTrue();
        Granted(zero).Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_WhenHeld_WaitsUntilReleased()
    {
        var gate = new AsyncLock();
        AsyncLock.Releaser held = await gate.AcquireAsync();

        ValueTask<AsyncLock.Releaser> waiting = gate.AcquireAsync();

        waiting.IsCompleted.Should().BeFalse();
        gate.Lines.Waiting.Should().Be(1);
        held.Dispose();
        (await Within(waiting)).Dispose();
        gate.IsLocked.Should().BeFalse();
        gate.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_WhenHeld_WaitsInFifoOrder()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        var waiters = Enumerable.Range(0, 5).Select(_ => gate.AcquireAsync()).ToArray();
        gate.Lines.Waiting.Should().Be(5);

        held.Dispose();
        for (int i = 0; i < waiters.Length; i++)
        {
            // Exactly the oldest remaining waiter holds the lock; everyone behind it still waits.
            waiters[i].IsCompletedSuccessfully.Should().BeTrue($"waiter {i} is the oldest");
            waiters.Skip(i + 1).Count(w => w.IsCompleted).Should().Be(0, $"only waiter {i} may hold the lock");
            gate.Lines.Waiting.Should().Be(waiters.Length - i - 1);
            gate.IsLocked.Should().BeTrue();
            (await Within(waiters[i])).Dispose();
        }

        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_ManyContenders_EnterTheCriticalSectionInArrivalOrder()
    {
        var gate = new AsyncLock();
        AsyncLock.Releaser first = await gate.AcquireAsync();
        var order = new List<int>();
        Task[] contenders = Enumerable.Range(0, 5).Select(async i =>
        {
            using (await gate.AcquireAsync().ConfigureAwait(false))
            {
                lock (order)
                {
                    order.Add(i);
                }

                await Task.Yield();
            }
        }).ToArray();

        first.Dispose();
        await Task.WhenAll(contenders).WaitAsync(s_hang);

        order.Should().Equal(0, 1, 2, 3, 4);
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task Release_WithWaiters_HandsTheLockToTheOldestWaiterWithoutUnlocking()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> first = gate.AcquireAsync();
        ValueTask<AsyncLock.Releaser> second = gate.AcquireAsync();

        held.Dispose();

        gate.IsLocked.Should().BeTrue("the lock went straight to the first waiter");
        first.IsCompletedSuccessfully.Should().BeTrue();
        second.IsCompleted.Should().BeFalse();
        gate.Lines.Waiting.Should().Be(1);
        (await Within(first)).Dispose();
        (await Within(second)).Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_ByTheHolder_IsNotReentrant()
    {
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        using (await gate.AcquireAsync())
        {
            ValueTask<AsyncLock.Releaser> again = gate.AcquireAsync(TimeSpan.FromSeconds(1));
            again.IsCompleted.Should().BeFalse("the lock has no owner, so the holder waits like anyone else");
            time.Advance(TimeSpan.FromSeconds(1));
            await FluentActions.Awaiting(() => Within(again)).Should().ThrowAsync<TimeoutException>();
            gate.IsLocked.Should().BeTrue();
        }

        gate.IsLocked.Should().BeFalse();
    }

    // ---- TryAcquire and barging ----

    [Fact]
    public void TryAcquire_WhenFree_TakesTheLock_AndWhenHeld_Fails()
    {
        var gate = new AsyncLock();

        gate.TryAcquire(out AsyncLock.Releaser releaser).Should().BeTrue();
        gate.IsLocked.Should().BeTrue();
        gate.TryAcquire(out AsyncLock.Releaser second).Should().BeFalse();
        second.Should().Be(default(AsyncLock.Releaser));

        releaser.Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task TryAcquire_WhileAnyoneWaits_FailsEvenRightAfterARelease()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> first = gate.AcquireAsync();
        ValueTask<AsyncLock.Releaser> second = gate.AcquireAsync();

        held.Dispose(); // goes to `first`, whose continuation has not run yet

        gate.TryAcquire(out _).Should().BeFalse("the release went to the oldest waiter");
        ValueTask<AsyncLock.Releaser> zero = gate.AcquireAsync(TimeSpan.Zero);
        zero.IsFaulted.Should().BeTrue("a zero timeout may not barge past a waiter");
        await FluentActions.Awaiting(() => zero.AsTask()).Should().ThrowAsync<TimeoutException>();

        ValueTask<AsyncLock.Releaser> newcomer = gate.AcquireAsync();
        newcomer.IsCompleted.Should().BeFalse();
        (await Within(first)).Dispose();
        gate.TryAcquire(out _).Should().BeFalse("`second` still waits");
        second.IsCompletedSuccessfully.Should().BeTrue();
        newcomer.IsCompleted.Should().BeFalse();
        (await Within(second)).Dispose();
        (await Within(newcomer)).Dispose();
        gate.TryAcquire(out AsyncLock.Releaser last).Should().BeTrue();
        last.Dispose();
    }

    // ---- Release misuse ----

    [Fact]
    public void Release_WhenNotHeld_ThrowsSynchronizationLockException()
    {
        var gate = new AsyncLock();

        gate.Invoking(g => g.Release()).Should().Throw<SynchronizationLockException>();

        gate.IsLocked.Should().BeFalse();
        gate.TryAcquire(out AsyncLock.Releaser releaser).Should().BeTrue("a failed release changes nothing");
        gate.TryAcquire(out _).Should().BeFalse("a failed release did not add a second permit");
        releaser.Dispose();
    }

    [Fact]
    public void Release_Twice_SecondThrowsAndTheLockStaysUsable()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();

        gate.Release();
        gate.Invoking(g => g.Release()).Should().Throw<SynchronizationLockException>();

        gate.IsLocked.Should().BeFalse();
        gate.TryAcquire(out AsyncLock.Releaser releaser).Should().BeTrue();
        gate.TryAcquire(out _).Should().BeFalse();
        releaser.Dispose();
    }

    [Fact]
    public async Task Release_ByCodeThatDidNotAcquire_ReleasesTheLock()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();

        await Task.Run(gate.Release).WaitAsync(s_hang);

        gate.IsLocked.Should().BeFalse("the lock has no owner: any code may release it");
    }

    // ---- Releaser ----

    [Fact]
    public async Task Releaser_UsingBlock_HoldsTheLockInsideAndReleasesItAfter()
    {
        var gate = new AsyncLock();

        using (await gate.AcquireAsync())
        {
            gate.IsLocked.Should().BeTrue();
        }

        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task Releaser_UsingBlock_ReleasesTheLockWhenTheBodyThrows()
    {
        var gate = new AsyncLock();

        Func<Task> body = async () =>
        {
            using (await gate.AcquireAsync())
            {
                throw new InvalidOperationException("boom");
            }
        };

        await body.Should().ThrowAsync<InvalidOperationException>().WithMessage("boom");
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task Releaser_UsingBlock_WhenContended_HandsOverInOrder()
    {
        var gate = new AsyncLock();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var leave = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task holder = Task.Run(async () =>
        {
            using (await gate.AcquireAsync().ConfigureAwait(false))
            {
                entered.SetResult();
                await leave.Task.ConfigureAwait(false);
            }
        });
        await entered.Task.WaitAsync(s_hang);

        ValueTask<AsyncLock.Releaser> next = gate.AcquireAsync();
        next.IsCompleted.Should().BeFalse();
        leave.SetResult();
        await holder.WaitAsync(s_hang);

        using (await Within(next))
        {
            gate.IsLocked.Should().BeTrue();
        }

        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public void Releaser_Default_DisposeDoesNothing()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();

        default(AsyncLock.Releaser).Dispose();
        default(AsyncLock.Releaser).Dispose();

        gate.IsLocked.Should().BeTrue("a default releaser belongs to no lock");
        gate.TryAcquire(out _).Should().BeFalse();
    }

    [Fact]
    public void Releaser_FromAFailedTryAcquire_IsDefaultAndReleasesNothing()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();

        gate.TryAcquire(out AsyncLock.Releaser failed).Should().BeFalse();
        failed.Dispose();

        gate.IsLocked.Should().BeTrue();
    }

    [Fact]
    public void Releaser_DisposedTwice_ThrowsSynchronizationLockException()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser releaser).Should().BeTrue();

        releaser.Dispose();

        releaser.Invoking(r => r.Dispose()).Should().Throw<SynchronizationLockException>();
        gate.IsLocked.Should().BeFalse();
    }

    // ---- ToString ----

    [Fact]
    public void ToString_ShowsLockStateAndWaiters()
    {
        var gate = new AsyncLock();
        gate.ToString().Should().Be("AsyncLock(unlocked, waiters=0)");

        gate.TryAcquire(out _).Should().BeTrue();
        gate.ToString().Should().Be("AsyncLock(locked, waiters=0)");

        using var cts = new CancellationTokenSource();
        _ = gate.AcquireAsync(cts.Token);
        _ = gate.AcquireAsync(cts.Token);
        gate.ToString().Should().Be("AsyncLock(locked, waiters=2)");

        cts.Cancel();
        gate.ToString().Should().Be("AsyncLock(locked, waiters=0)");
    }

    // ---- arguments ----

    public static TheoryData<TimeSpan> InvalidTimeouts => new()
    {
        TimeSpan.FromMilliseconds(-2),
        TimeSpan.FromTicks(-1),
        TimeSpan.MinValue,
        TimeSpan.FromMilliseconds(uint.MaxValue),
        TimeSpan.FromDays(50),
        TimeSpan.MaxValue,
    };

    [Theory]
    [MemberData(nameof(InvalidTimeouts))]
    public void AcquireAsync_InvalidTimeout_ThrowsArgumentOutOfRangeAtTheCall(TimeSpan timeout)
    {
        var gate = new AsyncLock();

        gate.Invoking(g => g.AcquireAsync(timeout)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");

        gate.IsLocked.Should().BeFalse("a rejected call takes nothing");
        gate.TryAcquire(out _).Should().BeTrue();
        gate.Invoking(g => g.AcquireAsync(timeout)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
        gate.Lines.Waiting.Should().Be(0, "a rejected call does not queue");
    }

    [Fact]
    public void AcquireAsync_InvalidTimeoutAndCancelledToken_ReportsTheBadArgument()
    {
        var gate = new AsyncLock();
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        gate.Invoking(g => g.AcquireAsync(TimeSpan.FromMilliseconds(-5), cts.Token))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
    }

    [Fact]
    public async Task AcquireAsync_LongestAndInfiniteTimeouts_AreAccepted()
    {
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();

        ValueTask<AsyncLock.Releaser> longest = gate.AcquireAsync(TimeSpan.FromMilliseconds(uint.MaxValue - 1));
        ValueTask<AsyncLock.Releaser> infinite = gate.AcquireAsync(Timeout.InfiniteTimeSpan);

        longest.IsCompleted.Should().BeFalse();
        infinite.IsCompleted.Should().BeFalse();
        time.ActiveTimers.Should().Be(1, "only the finite wait has a timer");
        time.Advance(TimeSpan.FromDays(49));
        longest.IsCompleted.Should().BeFalse();
        held.Dispose();
        (await Within(longest)).Dispose();
        (await Within(infinite)).Dispose();
        time.ActiveTimers.Should().Be(0);
    }

    // ---- cancellation ----

    [Fact]
    public async Task AcquireAsync_PreCancelledToken_FailsAtOnceEvenWhenFree()
    {
        var gate = new AsyncLock();
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        ValueTask<AsyncLock.Releaser> plain = gate.AcquireAsync(cts.Token);
        ValueTask<AsyncLock.Releaser> timed = gate.AcquireAsync(TimeSpan.FromSeconds(1), cts.Token);
        ValueTask<AsyncLock.Releaser> zero = gate.AcquireAsync(TimeSpan.Zero, cts.Token);

        plain.IsCanceled.Should().BeTrue();
        timed.IsCanceled.Should().BeTrue();
        zero.IsCanceled.Should().BeTrue("cancellation is checked before the lock");
        gate.IsLocked.Should().BeFalse("a pre-cancelled call takes nothing");
        (await FluentActions.Awaiting(() => plain.AsTask()).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);
        await FluentActions.Awaiting(() => timed.AsTask()).Should().ThrowAsync<OperationCanceledException>();
        await FluentActions.Awaiting(() => zero.AsTask()).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public void AcquireAsync_PreCancelledToken_WhenHeld_DoesNotQueue()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        gate.AcquireAsync(cts.Token).IsCanceled.Should().BeTrue();

        gate.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWhileWaiting_ThrowsWithTheTokenAndLeavesTheLine()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncLock.Releaser> waiting = gate.AcquireAsync(cts.Token);
        gate.Lines.Waiting.Should().Be(1);

        cts.Cancel();

        (await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);
        gate.Lines.Waiting.Should().Be(0);
        gate.IsLocked.Should().BeTrue("the holder still holds it");
        held.Dispose();
        gate.IsLocked.Should().BeFalse("the cancelled waiter was not handed the lock");
    }

    [Fact]
    public async Task AcquireAsync_CancelledWaiterInTheMiddle_IsSkipped()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncLock.Releaser> a = gate.AcquireAsync();
        ValueTask<AsyncLock.Releaser> b = gate.AcquireAsync(cts.Token);
        ValueTask<AsyncLock.Releaser> c = gate.AcquireAsync();

        cts.Cancel();
        b.IsCanceled.Should().BeTrue();
        gate.Lines.Waiting.Should().Be(2);

        held.Dispose();
        a.IsCompletedSuccessfully.Should().BeTrue();
        c.IsCompleted.Should().BeFalse();
        (await Within(a)).Dispose();
        c.IsCompletedSuccessfully.Should().BeTrue("the cancelled waiter between them was skipped");
        (await Within(c)).Dispose();
        gate.IsLocked.Should().BeFalse();
        await FluentActions.Awaiting(() => b.AsTask()).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task AcquireAsync_CancelledHeadWaiter_NextWaiterGetsTheRelease()
    {
        // asyncio test_cancel_race: A holds, B and C wait; B is cancelled, then A releases: C must get the lock.
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser a).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncLock.Releaser> b = gate.AcquireAsync(cts.Token);
        ValueTask<AsyncLock.Releaser> c = gate.AcquireAsync();

        cts.Cancel();
        a.Dispose();

        c.IsCompletedSuccessfully.Should().BeTrue();
        gate.IsLocked.Should().BeTrue();
        await FluentActions.Awaiting(() => Within(b)).Should().ThrowAsync<OperationCanceledException>();
        (await Within(c)).Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_CancelledAfterTheLockWasHandedOver_KeepsTheLock()
    {
        // asyncio test_cancel_release_race / test_finished_waiter_cancelled: the grant wins; nothing is lost.
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser a).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncLock.Releaser> b = gate.AcquireAsync(cts.Token);
        ValueTask<AsyncLock.Releaser> c = gate.AcquireAsync();

        a.Dispose();
        cts.Cancel();

        AsyncLock.Releaser bHolds = await Within(b);
        gate.IsLocked.Should().BeTrue();
        c.IsCompleted.Should().BeFalse("B holds the lock");
        bHolds.Dispose();
        (await Within(c)).Dispose();
        gate.IsLocked.Should().BeFalse();
        gate.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_LastWaiterCancelled_ReopensTheFastPath()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncLock.Releaser> waiting = gate.AcquireAsync(cts.Token);
        cts.Cancel();
        await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<OperationCanceledException>();

        held.Dispose();

        gate.IsLocked.Should().BeFalse();
        ValueTask<AsyncLock.Releaser> again = gate.AcquireAsync();
        again.IsCompletedSuccessfully.Should().BeTrue();
        gate.TryAcquire(out _).Should().BeFalse();
        Granted(again).Dispose();
        gate.TryAcquire(out AsyncLock.Releaser last).Should().BeTrue();
        last.Dispose();
    }

    // ---- timeouts ----

    [Fact]
    public async Task AcquireAsync_ZeroTimeout_WhenHeld_ThrowsTimeoutExceptionAtOnce()
    {
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out _).Should().BeTrue();

        ValueTask<AsyncLock.Releaser> zero = gate.AcquireAsync(TimeSpan.Zero);

        zero.IsFaulted.Should().BeTrue();
        await FluentActions.Awaiting(() => zero.AsTask()).Should().ThrowAsync<TimeoutException>();
        gate.Lines.Waiting.Should().Be(0);
        time.TimerCreations.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_TimesOut_ThrowsTimeoutExceptionAndHoldsNothing()
    {
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();

        ValueTask<AsyncLock.Releaser> waiting = gate.AcquireAsync(TimeSpan.FromSeconds(1));
        time.Advance(TimeSpan.FromMilliseconds(999));
        waiting.IsCompleted.Should().BeFalse();
        time.Advance(TimeSpan.FromMilliseconds(1));

        await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<TimeoutException>();
        gate.Lines.Waiting.Should().Be(0);
        gate.IsLocked.Should().BeTrue();
        held.Dispose();
        gate.IsLocked.Should().BeFalse("the timed-out waiter was not handed the lock");
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_TimedOutWaiterInTheMiddle_IsSkipped()
    {
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> a = gate.AcquireAsync(TimeSpan.FromSeconds(10));
        ValueTask<AsyncLock.Releaser> b = gate.AcquireAsync(TimeSpan.FromSeconds(1));
        ValueTask<AsyncLock.Releaser> c = gate.AcquireAsync();

        time.Advance(TimeSpan.FromSeconds(1));
        b.IsFaulted.Should().BeTrue();
        gate.Lines.Waiting.Should().Be(2);

        held.Dispose();
        a.IsCompletedSuccessfully.Should().BeTrue();
        (await Within(a)).Dispose();
        c.IsCompletedSuccessfully.Should().BeTrue("the timed-out waiter between them was skipped");
        (await Within(c)).Dispose();
        gate.IsLocked.Should().BeFalse();
        await FluentActions.Awaiting(() => b.AsTask()).Should().ThrowAsync<TimeoutException>();
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_ReleasedBeforeTheTimeout_AcquiresAndTheTimerIsGone()
    {
        // tornado test_acquire_timeout_preempted
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> waiting = gate.AcquireAsync(TimeSpan.FromSeconds(2));

        time.Advance(TimeSpan.FromSeconds(1));
        held.Dispose();
        time.Advance(TimeSpan.FromSeconds(5));

        AsyncLock.Releaser releaser = await Within(waiting);
        gate.IsLocked.Should().BeTrue("a timer firing after the grant changes nothing");
        time.ActiveTimers.Should().Be(0);
        releaser.Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_LastWaiterTimesOut_ReopensTheFastPath()
    {
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> waiting = gate.AcquireAsync(TimeSpan.FromSeconds(1));
        time.Advance(TimeSpan.FromSeconds(1));
        await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<TimeoutException>();

        held.Dispose();

        gate.IsLocked.Should().BeFalse();
        gate.TryAcquire(out AsyncLock.Releaser again).Should().BeTrue();
        again.Dispose();
    }

    // ---- continuations ----

    [Fact]
    public async Task Release_WithAWaiter_NeverRunsItsContinuationInline()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        Task<bool> ranInsideRelease = ResumeAndReportAsync(gate.AcquireAsync());

        t_insideRelease = true;
        try
        {
            held.Dispose();
        }
        finally
        {
            t_insideRelease = false;
        }

        (await ranInsideRelease.WaitAsync(s_hang)).Should().BeFalse();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task Cancel_OfAWaiter_NeverRunsItsContinuationInline()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        Task<bool> ranInsideCancel = FailAndReportAsync(gate.AcquireAsync(cts.Token));

        t_insideRelease = true;
        try
        {
            cts.Cancel();
        }
        finally
        {
            t_insideRelease = false;
        }

        (await ranInsideCancel.WaitAsync(s_hang)).Should().BeFalse("the waiter resumes asynchronously, not inside Cancel");
        held.Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    // ---- allocations ----

    [Fact]
    public void AcquireAndRelease_Uncontended_AllocateNothing()
    {
        var gate = new AsyncLock();
        using var cts = new CancellationTokenSource();
        UncontendedCycles(gate, cts.Token, 200); // warm up (JIT tiers, statics)

        long before = GC.GetAllocatedBytesForCurrentThread();
        int synchronous = UncontendedCycles(gate, cts.Token, 1000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        synchronous.Should().Be(4000, "every uncontended acquire completes synchronously");
        allocated.Should().Be(0);
        gate.IsLocked.Should().BeFalse();
    }

    // ---- races: nothing lost ----

    [Fact]
    public async Task AcquireAsync_CancellationRacingRelease_EitherKeepsTheLockOrPassesItOn()
    {
        int kept = 0, passedOn = 0;
        await Task.Run(async () =>
        {
            var gate = new AsyncLock();
            var random = new Random(1234);
            using var racer = new Racer();
            for (int i = 0; i < 2500; i++)
            {
                gate.TryAcquire(out AsyncLock.Releaser a).Should().BeTrue();
                using var cts = new CancellationTokenSource();
                ValueTask<AsyncLock.Releaser> b = gate.AcquireAsync(cts.Token);
                ValueTask<AsyncLock.Releaser> c = gate.AcquireAsync();

                racer.Race(a.Dispose, cts.Cancel, random);

                // Both the release and the cancellation decide B's outcome synchronously: it is known now.
                if (b.IsCompletedSuccessfully)
                {
                    kept++;
                    AssertHeldAlone(gate, c, "B kept the lock");
                    Granted(b).Dispose();
                }
                else
                {
                    passedOn++;
                    b.IsCanceled.Should().BeTrue();
                    await FluentActions.Awaiting(() => b.AsTask()).Should().ThrowAsync<OperationCanceledException>();
                }

                c.IsCompletedSuccessfully.Should().BeTrue("the lock reached C either way");
                (await Within(c)).Dispose();
                gate.IsLocked.Should().BeFalse();
                gate.Lines.Waiting.Should().Be(0);
            }
        }).WaitAsync(TimeSpan.FromSeconds(60));

        (kept + passedOn).Should().Be(2500);
    }

    [Fact]
    public async Task AcquireAsync_ManualTimeoutRacingRelease_EitherKeepsTheLockOrPassesItOn()
    {
        var time = new ManualTimeProvider();
        await Task.Run(async () =>
        {
            var gate = new AsyncLock(time);
            var random = new Random(4321);
            using var racer = new Racer();
            for (int i = 0; i < 2500; i++)
            {
                gate.TryAcquire(out AsyncLock.Releaser a).Should().BeTrue();
                ValueTask<AsyncLock.Releaser> b = gate.AcquireAsync(TimeSpan.FromSeconds(1));
                ValueTask<AsyncLock.Releaser> c = gate.AcquireAsync();

                racer.Race(a.Dispose, () => time.Advance(TimeSpan.FromSeconds(1)), random);

                if (b.IsCompletedSuccessfully)
                {
                    AssertHeldAlone(gate, c, "B kept the lock");
                    Granted(b).Dispose();
                }
                else
                {
                    b.IsFaulted.Should().BeTrue();
                    await FluentActions.Awaiting(() => b.AsTask()).Should().ThrowAsync<TimeoutException>();
                }

                c.IsCompletedSuccessfully.Should().BeTrue("the lock reached C either way");
                (await Within(c)).Dispose();
                gate.IsLocked.Should().BeFalse();
                gate.Lines.Waiting.Should().Be(0);
            }
        }).WaitAsync(TimeSpan.FromSeconds(60));

        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_RealTimeoutRacingRelease_EitherKeepsTheLockOrPassesItOn()
    {
        await Task.Run(async () =>
        {
            var gate = new AsyncLock();
            var random = new Random(99);
            for (int i = 0; i < 300; i++)
            {
                gate.TryAcquire(out AsyncLock.Releaser a).Should().BeTrue();
                ValueTask<AsyncLock.Releaser> b = gate.AcquireAsync(TimeSpan.FromMilliseconds(1));
                ValueTask<AsyncLock.Releaser> c = gate.AcquireAsync();
                Thread.SpinWait(random.Next(20_000)); // about the timer's resolution
                a.Dispose();

                AsyncLock.Releaser bHolds;
                try
                {
                    bHolds = await Within(b);
                }
                catch (TimeoutException)
                {
                    (await Within(c)).Dispose();
                    gate.IsLocked.Should().BeFalse();
                    continue;
                }

                AssertHeldAlone(gate, c, "B kept the lock");
                bHolds.Dispose();
                (await Within(c)).Dispose();
                gate.IsLocked.Should().BeFalse();
                gate.Lines.Waiting.Should().Be(0);
            }
        }).WaitAsync(TimeSpan.FromSeconds(60));
    }

    // ---- stress ----

    [Fact]
    public async Task Stress_ManyTasksWithRandomCancellationsAndTimeouts_KeepMutualExclusionAndLoseNothing()
    {
        const int Workers = 8;
        const int Attempts = 1500;
        var gate = new AsyncLock();
        int inside = 0, overlaps = 0, acquired = 0, cancelled = 0, timedOut = 0, refused = 0;

        Task[] workers = Enumerable.Range(0, Workers).Select(w => Task.Run(async () =>
        {
            var random = new Random(w);
            for (int i = 0; i < Attempts; i++)
            {
                using var cts = new CancellationTokenSource();
                AsyncLock.Releaser releaser;
                try
                {
                    switch (random.Next(5))
                    {
                        case 0:
                            releaser = await gate.AcquireAsync().ConfigureAwait(false);
                            break;
                        case 1:
                            ValueTask<AsyncLock.Releaser> pending = gate.AcquireAsync(cts.Token);
                            if (random.Next(2) == 0)
                            {
                                cts.Cancel();
                            }
                            else
                            {
                                cts.CancelAfter(1);
                            }

                            releaser = await pending.ConfigureAwait(false);
                            break;
                        case 2:
                            releaser = await gate.AcquireAsync(TimeSpan.FromMilliseconds(random.Next(2))).ConfigureAwait(false);
                            break;
                        case 3:
                            cts.CancelAfter(1);
                            releaser = await gate.AcquireAsync(TimeSpan.FromMilliseconds(1), cts.Token).ConfigureAwait(false);
                            break;
                        default:
                            if (!gate.TryAcquire(out releaser))
                            {
                                Interlocked.Increment(ref refused);
                                continue;
                            }

                            break;
                    }
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref cancelled);
                    continue;
                }
                catch (TimeoutException)
                {
                    Interlocked.Increment(ref timedOut);
                    continue;
                }

                if (Interlocked.Increment(ref inside) != 1)
                {
                    Interlocked.Increment(ref overlaps);
                }

                Interlocked.Increment(ref acquired);
                if (random.Next(2) == 0)
                {
                    await Task.Yield();
                }

                Interlocked.Decrement(ref inside);
                releaser.Dispose();
            }
        })).ToArray();

        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(60));

        overlaps.Should().Be(0);
        (acquired + cancelled + timedOut + refused).Should().Be(Workers * Attempts);
        acquired.Should().BePositive();
        gate.IsLocked.Should().BeFalse();
        gate.Lines.Waiting.Should().Be(0);
    }

    // ---- helpers ----

    /// <summary>The releaser of an acquire that has completed successfully (asserted first, so this never blocks).</summary>
    private static AsyncLock.Releaser Granted(ValueTask<AsyncLock.Releaser> acquire)
    {
        acquire.IsCompletedSuccessfully.Should().BeTrue();
        return acquire.Result;
    }

    private static Task<AsyncLock.Releaser> Within(ValueTask<AsyncLock.Releaser> pending) => pending.AsTask().WaitAsync(s_hang);

    /// <summary>The lock is held by one party, and <paramref name="waiter"/> still waits for it.</summary>
    private static void AssertHeldAlone(AsyncLock gate, ValueTask<AsyncLock.Releaser> waiter, string because)
    {
        gate.IsLocked.Should().BeTrue(because);
        waiter.IsCompleted.Should().BeFalse(because);
        gate.Lines.Waiting.Should().Be(1, because);
    }

    private static async Task<bool> ResumeAndReportAsync(ValueTask<AsyncLock.Releaser> pending)
    {
        AsyncLock.Releaser releaser = await pending.ConfigureAwait(false);
        bool inline = t_insideRelease;
        releaser.Dispose();
        return inline;
    }

    private static async Task<bool> FailAndReportAsync(ValueTask<AsyncLock.Releaser> pending)
    {
        try
        {
            (await pending.ConfigureAwait(false)).Dispose();
        }
        catch (OperationCanceledException)
        {
        }

        return t_insideRelease;
    }

    /// <summary>Acquires and releases through every uncontended path; returns how many acquires completed synchronously.</summary>
    private static int UncontendedCycles(AsyncLock gate, CancellationToken token, int iterations)
    {
        int synchronous = 0;
        for (int i = 0; i < iterations; i++)
        {
            ValueTask<AsyncLock.Releaser> plain = gate.AcquireAsync();
            if (plain.IsCompletedSuccessfully)
            {
                synchronous++;
                plain.Result.Dispose();
            }

            ValueTask<AsyncLock.Releaser> cancellable = gate.AcquireAsync(token);
            if (cancellable.IsCompletedSuccessfully)
            {
                synchronous++;
                cancellable.Result.Dispose();
            }

            ValueTask<AsyncLock.Releaser> timed = gate.AcquireAsync(TimeSpan.FromSeconds(30), token);
            if (timed.IsCompletedSuccessfully)
            {
                synchronous++;
                timed.Result.Dispose();
            }

            if (gate.TryAcquire(out AsyncLock.Releaser tried))
            {
                synchronous++;
                tried.Dispose();
            }
        }

        return synchronous;
    }
}
