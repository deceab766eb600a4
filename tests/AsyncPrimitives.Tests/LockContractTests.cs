using AsyncPrimitives.Internal;
using AsyncPrimitives.Tests.Support;

namespace AsyncPrimitives.Tests;

/// <summary>
/// The contract every lock-like primitive keeps, run against a gate with one permit: an <see cref="AsyncLock"/>, or an
/// <see cref="AsyncSemaphore"/> of one. What Toro's test_lock.py and test_semaphore.py, tornado's LockTests and
/// SemaphoreTest and CPython's asyncio LockTests and SemaphoreTests check, re-expressed for a thread-safe primitive,
/// plus the races where those originals lose the permit. A sealed subclass per primitive runs all of these, plus its
/// own tests (release misuse, counts, bounds, <c>ToString</c>).
/// </summary>
/// <typeparam name="TGate">The primitive.</typeparam>
/// <typeparam name="TReleaser">What an acquire returns; disposing it releases.</typeparam>
public abstract class LockContractTests<TGate, TReleaser>
    where TGate : class
    where TReleaser : struct, IDisposable
{
    /// <summary>How long a wait that a bug could hang is given.</summary>
    protected static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    /// <summary>True on a thread while it is inside a release or a cancellation; a continuation that sees it ran inline.</summary>
    [ThreadStatic]
    private static bool t_insideCall;

    /// <summary>A free gate with one permit.</summary>
    protected abstract TGate Create(TimeProvider? timeProvider = null);

    protected abstract ValueTask<TReleaser> AcquireAsync(TGate gate, CancellationToken cancellationToken = default);

    protected abstract ValueTask<TReleaser> AcquireAsync(TGate gate, TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>The non-waiting acquire; undo a success with <see cref="Release"/>.</summary>
    protected abstract bool TryAcquire(TGate gate);

    protected abstract void Release(TGate gate);

    /// <summary>Whether the permit is taken (a snapshot).</summary>
    protected abstract bool IsHeld(TGate gate);

    private protected abstract WaitLines Lines(TGate gate);

    // ---- acquire and release ----

    [Fact]
    public void AcquireAsync_WhenFree_CompletesSynchronouslyAndTakesThePermit()
    {
        TGate gate = Create();
        IsHeld(gate).Should().BeFalse();

        ValueTask<TReleaser> acquire = AcquireAsync(gate);

        acquire.IsCompletedSuccessfully.Should().BeTrue();
        IsHeld(gate).Should().BeTrue();
        Granted(acquire).Dispose();
        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public void AcquireAsync_WithTimeout_WhenFree_CompletesSynchronouslyWithoutATimer()
    {
        var time = new CountingTimeProvider();
        TGate gate = Create(time);

        ValueTask<TReleaser> acquire = AcquireAsync(gate, TimeSpan.FromSeconds(5));

        acquire.IsCompletedSuccessfully.Should().BeTrue();
        time.TimerCreations.Should().Be(0);
        Granted(acquire).Dispose();

        ValueTask<TReleaser> zero = AcquireAsync(gate, TimeSpan.Zero);
        zero.IsCompletedSuccessfully.Should().BeTrue("a zero timeout succeeds now when it can");
        IsHeld(gate).Should().BeTrue();
        Granted(zero).Dispose();
        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_WhenHeld_WaitsUntilReleased()
    {
        TGate gate = Create();
        TReleaser held = await AcquireAsync(gate);

        ValueTask<TReleaser> waiting = AcquireAsync(gate);

        waiting.IsCompleted.Should().BeFalse();
        held.Dispose();
        (await Within(waiting)).Dispose();
        IsHeld(gate).Should().BeFalse();
        Lines(gate).Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_WhenHeld_WaitsInFifoOrder()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();
        ValueTask<TReleaser>[] waiters = Enumerable.Range(0, 5).Select(_ => AcquireAsync(gate)).ToArray();

        Release(gate);
        for (int i = 0; i < waiters.Length; i++)
        {
            // Exactly the oldest remaining waiter holds the permit; everyone behind it still waits.
            waiters[i].IsCompletedSuccessfully.Should().BeTrue($"waiter {i} is the oldest");
            waiters.Skip(i + 1).Count(w => w.IsCompleted).Should().Be(0, $"only waiter {i} may hold the permit");
            IsHeld(gate).Should().BeTrue();
            (await Within(waiters[i])).Dispose();
        }

        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_ManyContenders_EnterInArrivalOrder()
    {
        TGate gate = Create();
        TReleaser first = await AcquireAsync(gate);
        var order = new List<int>();
        Task[] contenders = Enumerable.Range(0, 5).Select(async i =>
        {
            using (await AcquireAsync(gate).ConfigureAwait(false))
            {
                lock (order)
                {
                    order.Add(i);
                }

                await Task.Yield();
            }
        }).ToArray();

        first.Dispose();
        await Task.WhenAll(contenders).WaitAsync(Bound);

        order.Should().Equal(0, 1, 2, 3, 4);
        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task Release_WithWaiters_HandsThePermitToTheOldestWaiterWithoutFreeingIt()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();
        ValueTask<TReleaser> first = AcquireAsync(gate);
        ValueTask<TReleaser> second = AcquireAsync(gate);

        Release(gate);

        IsHeld(gate).Should().BeTrue("the permit went straight to the first waiter");
        first.IsCompletedSuccessfully.Should().BeTrue();
        second.IsCompleted.Should().BeFalse();
        (await Within(first)).Dispose();
        (await Within(second)).Dispose();
        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_ByTheHolder_IsNotReentrant()
    {
        var time = new FakeTimeProvider();
        TGate gate = Create(time);
        using (await AcquireAsync(gate))
        {
            ValueTask<TReleaser> again = AcquireAsync(gate, TimeSpan.FromSeconds(1));
            again.IsCompleted.Should().BeFalse("there is no owner, so the holder waits like anyone else");
            time.Advance(TimeSpan.FromSeconds(1));
            await FluentActions.Awaiting(() => Within(again)).Should().ThrowAsync<TimeoutException>();
            IsHeld(gate).Should().BeTrue();
        }

        IsHeld(gate).Should().BeFalse();
    }

    // ---- TryAcquire and barging ----

    [Fact]
    public void TryAcquire_WhenFree_TakesThePermit_AndWhenHeld_Fails()
    {
        TGate gate = Create();

        TryAcquire(gate).Should().BeTrue();
        IsHeld(gate).Should().BeTrue();
        TryAcquire(gate).Should().BeFalse();
        Lines(gate).Waiting.Should().Be(0, "TryAcquire never waits");

        Release(gate);
        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task TryAcquire_WhileAnyoneWaits_FailsEvenRightAfterARelease()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();
        ValueTask<TReleaser> first = AcquireAsync(gate);
        ValueTask<TReleaser> second = AcquireAsync(gate);

        Release(gate); // goes to `first`, whose continuation has not run yet

        TryAcquire(gate).Should().BeFalse("the release went to the oldest waiter");
        ValueTask<TReleaser> zero = AcquireAsync(gate, TimeSpan.Zero);
        zero.IsFaulted.Should().BeTrue("a zero timeout may not barge past a waiter");
        await FluentActions.Awaiting(() => zero.AsTask()).Should().ThrowAsync<TimeoutException>();

        ValueTask<TReleaser> newcomer = AcquireAsync(gate);
        newcomer.IsCompleted.Should().BeFalse();
        (await Within(first)).Dispose();
        TryAcquire(gate).Should().BeFalse("`second` still waits");
        second.IsCompletedSuccessfully.Should().BeTrue();
        newcomer.IsCompleted.Should().BeFalse();
        (await Within(second)).Dispose();
        (await Within(newcomer)).Dispose();
        TryAcquire(gate).Should().BeTrue();
        Release(gate);
    }

    // ---- Releaser ----

    [Fact]
    public async Task Releaser_UsingBlock_HoldsThePermitInsideAndReleasesItAfter()
    {
        TGate gate = Create();

        using (await AcquireAsync(gate))
        {
            IsHeld(gate).Should().BeTrue();
        }

        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task Releaser_UsingBlock_ReleasesWhenTheBodyThrows()
    {
        TGate gate = Create();

        Func<Task> body = async () =>
        {
            using (await AcquireAsync(gate))
            {
                throw new InvalidOperationException("boom");
            }
        };

        await body.Should().ThrowAsync<InvalidOperationException>().WithMessage("boom");
        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task Releaser_UsingBlock_WhenContended_HandsOverInOrder()
    {
        TGate gate = Create();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var leave = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task holder = Task.Run(async () =>
        {
            using (await AcquireAsync(gate).ConfigureAwait(false))
            {
                entered.SetResult();
                await leave.Task.ConfigureAwait(false);
            }
        });
        await entered.Task.WaitAsync(Bound);

        ValueTask<TReleaser> next = AcquireAsync(gate);
        next.IsCompleted.Should().BeFalse();
        leave.SetResult();
        await holder.WaitAsync(Bound);

        using (await Within(next))
        {
            IsHeld(gate).Should().BeTrue();
        }

        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public void Releaser_Default_DisposeDoesNothing()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();

        default(TReleaser).Dispose();
        default(TReleaser).Dispose();

        IsHeld(gate).Should().BeTrue("a default releaser belongs to no primitive");
        TryAcquire(gate).Should().BeFalse();
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
        TGate gate = Create();

        FluentActions.Invoking(() => AcquireAsync(gate, timeout)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");

        IsHeld(gate).Should().BeFalse("a rejected call takes nothing");
        TryAcquire(gate).Should().BeTrue();
        FluentActions.Invoking(() => AcquireAsync(gate, timeout)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
        Lines(gate).Waiting.Should().Be(0, "a rejected call does not queue");
    }

    [Fact]
    public void AcquireAsync_InvalidTimeoutAndCancelledToken_ReportsTheBadArgument()
    {
        TGate gate = Create();
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        FluentActions.Invoking(() => AcquireAsync(gate, TimeSpan.FromMilliseconds(-5), cts.Token))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
    }

    [Fact]
    public async Task AcquireAsync_LongestAndInfiniteTimeouts_AreAccepted()
    {
        var time = new CountingTimeProvider();
        TGate gate = Create(time);
        TryAcquire(gate).Should().BeTrue();

        ValueTask<TReleaser> longest = AcquireAsync(gate, TimeSpan.FromMilliseconds(uint.MaxValue - 1));
        ValueTask<TReleaser> infinite = AcquireAsync(gate, Timeout.InfiniteTimeSpan);

        longest.IsCompleted.Should().BeFalse();
        infinite.IsCompleted.Should().BeFalse();
        time.ActiveTimers.Should().Be(1, "only the finite wait has a timer");
        time.Advance(TimeSpan.FromDays(49));
        longest.IsCompleted.Should().BeFalse();
        Release(gate);
        (await Within(longest)).Dispose();
        (await Within(infinite)).Dispose();
        time.ActiveTimers.Should().Be(0);
    }

    // ---- cancellation ----

    [Fact]
    public async Task AcquireAsync_PreCancelledToken_FailsAtOnceEvenWhenFree()
    {
        TGate gate = Create();
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        ValueTask<TReleaser> plain = AcquireAsync(gate, cts.Token);
        ValueTask<TReleaser> timed = AcquireAsync(gate, TimeSpan.FromSeconds(1), cts.Token);
        ValueTask<TReleaser> zero = AcquireAsync(gate, TimeSpan.Zero, cts.Token);

        plain.IsCanceled.Should().BeTrue();
        timed.IsCanceled.Should().BeTrue();
        zero.IsCanceled.Should().BeTrue("cancellation is checked before anything else");
        IsHeld(gate).Should().BeFalse("a pre-cancelled call takes nothing");
        (await FluentActions.Awaiting(() => plain.AsTask()).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);
        await FluentActions.Awaiting(() => timed.AsTask()).Should().ThrowAsync<OperationCanceledException>();
        await FluentActions.Awaiting(() => zero.AsTask()).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public void AcquireAsync_PreCancelledToken_WhenHeld_DoesNotQueue()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        AcquireAsync(gate, cts.Token).IsCanceled.Should().BeTrue();

        Lines(gate).Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWhileWaiting_ThrowsWithTheTokenAndLeavesTheLine()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<TReleaser> waiting = AcquireAsync(gate, cts.Token);

        cts.Cancel();

        (await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);
        Lines(gate).Waiting.Should().Be(0);
        IsHeld(gate).Should().BeTrue("the holder still holds it");
        Release(gate);
        IsHeld(gate).Should().BeFalse("the cancelled waiter was not handed the permit");
    }

    [Fact]
    public async Task AcquireAsync_CancelledWaiterInTheMiddle_IsSkipped()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<TReleaser> a = AcquireAsync(gate);
        ValueTask<TReleaser> b = AcquireAsync(gate, cts.Token);
        ValueTask<TReleaser> c = AcquireAsync(gate);

        cts.Cancel();
        b.IsCanceled.Should().BeTrue();

        Release(gate);
        a.IsCompletedSuccessfully.Should().BeTrue();
        c.IsCompleted.Should().BeFalse();
        (await Within(a)).Dispose();
        c.IsCompletedSuccessfully.Should().BeTrue("the cancelled waiter between them was skipped");
        (await Within(c)).Dispose();
        IsHeld(gate).Should().BeFalse();
        await FluentActions.Awaiting(() => b.AsTask()).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task AcquireAsync_CancelledHeadWaiter_TheNextWaiterGetsTheRelease()
    {
        // asyncio test_cancel_race: A holds, B and C wait; B is cancelled, then A releases: C must get the permit.
        TGate gate = Create();
        TReleaser a = await AcquireAsync(gate);
        using var cts = new CancellationTokenSource();
        ValueTask<TReleaser> b = AcquireAsync(gate, cts.Token);
        ValueTask<TReleaser> c = AcquireAsync(gate);

        cts.Cancel();
        a.Dispose();

        c.IsCompletedSuccessfully.Should().BeTrue();
        IsHeld(gate).Should().BeTrue();
        await FluentActions.Awaiting(() => Within(b)).Should().ThrowAsync<OperationCanceledException>();
        (await Within(c)).Dispose();
        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_CancelledAfterThePermitWasHandedOver_KeepsIt()
    {
        // asyncio test_cancel_release_race, test_finished_waiter_cancelled, test_acquire_no_hang: the grant wins.
        TGate gate = Create();
        TReleaser a = await AcquireAsync(gate);
        using var cts = new CancellationTokenSource();
        ValueTask<TReleaser> b = AcquireAsync(gate, cts.Token);
        ValueTask<TReleaser> c = AcquireAsync(gate);

        a.Dispose();
        cts.Cancel();

        TReleaser bHolds = await Within(b);
        IsHeld(gate).Should().BeTrue();
        c.IsCompleted.Should().BeFalse("B holds the permit");
        bHolds.Dispose();
        (await Within(c)).Dispose();
        IsHeld(gate).Should().BeFalse();
        Lines(gate).Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_CancelledJustAfterJoiningTheLine_IsNotServedByALaterRelease()
    {
        // The cancellation completes, and then the permit is released, while the acquire call is still arming its
        // timeout (the provider runs both inside CreateTimer): the cancellation came first, so the waiter must not
        // get the permit, and the permit must stay free.
        using var cts = new CancellationTokenSource();
        TGate? gate = null;
        var time = new HookedTimeProvider(() =>
        {
            cts.Cancel();
            Release(gate!);
        });
        gate = Create(time);
        TryAcquire(gate).Should().BeTrue();

        ValueTask<TReleaser> waiting = AcquireAsync(gate, TimeSpan.FromHours(1), cts.Token);

        await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<OperationCanceledException>();
        IsHeld(gate).Should().BeFalse();
        Lines(gate).Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_CancelledJustAfterJoiningTheLine_IsCancelledNotTimedOut()
    {
        // The cancellation completes while the acquire call is arming its timeout, and then the timer fires at once:
        // the wait ends as cancelled, the earlier of the two.
        using var cts = new CancellationTokenSource();
        var time = new HookedTimeProvider(() => cts.Cancel(), fireAtOnce: true);
        TGate gate = Create(time);
        TryAcquire(gate).Should().BeTrue();

        ValueTask<TReleaser> waiting = AcquireAsync(gate, TimeSpan.FromHours(1), cts.Token);

        await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<OperationCanceledException>();
        IsHeld(gate).Should().BeTrue();
        Release(gate);
    }

    [Fact]
    public async Task AcquireAsync_LastWaiterCancelled_ReopensTheFastPath()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        ValueTask<TReleaser> waiting = AcquireAsync(gate, cts.Token);
        cts.Cancel();
        await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<OperationCanceledException>();

        Release(gate);

        IsHeld(gate).Should().BeFalse();
        ValueTask<TReleaser> again = AcquireAsync(gate);
        again.IsCompletedSuccessfully.Should().BeTrue();
        TryAcquire(gate).Should().BeFalse();
        Granted(again).Dispose();
        TryAcquire(gate).Should().BeTrue();
        Release(gate);
    }

    // ---- timeouts ----

    [Fact]
    public async Task AcquireAsync_ZeroTimeout_WhenHeld_ThrowsTimeoutExceptionAtOnce()
    {
        var time = new CountingTimeProvider();
        TGate gate = Create(time);
        TryAcquire(gate).Should().BeTrue();

        ValueTask<TReleaser> zero = AcquireAsync(gate, TimeSpan.Zero);

        zero.IsFaulted.Should().BeTrue();
        await FluentActions.Awaiting(() => zero.AsTask()).Should().ThrowAsync<TimeoutException>();
        Lines(gate).Waiting.Should().Be(0);
        time.TimerCreations.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_TimesOut_ThrowsTimeoutExceptionAndHoldsNothing()
    {
        // tornado test_acquire_timeout, Toro test_try_acquire
        var time = new CountingTimeProvider();
        TGate gate = Create(time);
        TryAcquire(gate).Should().BeTrue();

        ValueTask<TReleaser> waiting = AcquireAsync(gate, TimeSpan.FromSeconds(1));
        time.Advance(TimeSpan.FromMilliseconds(999));
        waiting.IsCompleted.Should().BeFalse();
        time.Advance(TimeSpan.FromMilliseconds(1));

        await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<TimeoutException>();
        Lines(gate).Waiting.Should().Be(0);
        IsHeld(gate).Should().BeTrue();
        Release(gate);
        IsHeld(gate).Should().BeFalse("the timed-out waiter was not handed the permit");
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_TimedOutWaiterInTheMiddle_IsSkipped()
    {
        var time = new CountingTimeProvider();
        TGate gate = Create(time);
        TryAcquire(gate).Should().BeTrue();
        ValueTask<TReleaser> a = AcquireAsync(gate, TimeSpan.FromSeconds(10));
        ValueTask<TReleaser> b = AcquireAsync(gate, TimeSpan.FromSeconds(1));
        ValueTask<TReleaser> c = AcquireAsync(gate);

        time.Advance(TimeSpan.FromSeconds(1));
        b.IsFaulted.Should().BeTrue();

        Release(gate);
        a.IsCompletedSuccessfully.Should().BeTrue();
        (await Within(a)).Dispose();
        c.IsCompletedSuccessfully.Should().BeTrue("the timed-out waiter between them was skipped");
        (await Within(c)).Dispose();
        IsHeld(gate).Should().BeFalse();
        await FluentActions.Awaiting(() => b.AsTask()).Should().ThrowAsync<TimeoutException>();
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_ReleasedBeforeTheTimeout_AcquiresAndTheTimerIsGone()
    {
        // tornado test_acquire_timeout_preempted
        var time = new CountingTimeProvider();
        TGate gate = Create(time);
        TryAcquire(gate).Should().BeTrue();
        ValueTask<TReleaser> waiting = AcquireAsync(gate, TimeSpan.FromSeconds(2));

        time.Advance(TimeSpan.FromSeconds(1));
        Release(gate);
        time.Advance(TimeSpan.FromSeconds(5));

        TReleaser releaser = await Within(waiting);
        IsHeld(gate).Should().BeTrue("a timer firing after the grant changes nothing");
        time.ActiveTimers.Should().Be(0);
        releaser.Dispose();
        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_LastWaiterTimesOut_ReopensTheFastPath()
    {
        var time = new FakeTimeProvider();
        TGate gate = Create(time);
        TryAcquire(gate).Should().BeTrue();
        ValueTask<TReleaser> waiting = AcquireAsync(gate, TimeSpan.FromSeconds(1));
        time.Advance(TimeSpan.FromSeconds(1));
        await FluentActions.Awaiting(() => Within(waiting)).Should().ThrowAsync<TimeoutException>();

        Release(gate);

        IsHeld(gate).Should().BeFalse();
        TryAcquire(gate).Should().BeTrue();
        Release(gate);
    }

    [Fact]
    public async Task AcquireAsync_ManyTimedOutWaiters_AreAllRemoved()
    {
        // tornado test_garbage_collection: timed-out waiters do not pile up in the line.
        var time = new CountingTimeProvider();
        TGate gate = Create(time);
        TryAcquire(gate).Should().BeTrue();
        ValueTask<TReleaser>[] waiters = Enumerable.Range(0, 100).Select(_ => AcquireAsync(gate, TimeSpan.FromMilliseconds(10))).ToArray();
        ValueTask<TReleaser> patient = AcquireAsync(gate);

        time.Advance(TimeSpan.FromMilliseconds(10));

        Lines(gate).Waiting.Should().Be(1);
        foreach (ValueTask<TReleaser> waiter in waiters)
        {
            await FluentActions.Awaiting(() => Within(waiter)).Should().ThrowAsync<TimeoutException>();
        }

        Release(gate);
        (await Within(patient)).Dispose();
        IsHeld(gate).Should().BeFalse();
        time.ActiveTimers.Should().Be(0);
    }

    // ---- continuations ----

    [Fact]
    public async Task Release_WithAWaiter_NeverRunsItsContinuationInline()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();
        Task<bool> ranInsideRelease = ResumeAndReportAsync(AcquireAsync(gate));

        t_insideCall = true;
        try
        {
            Release(gate);
        }
        finally
        {
            t_insideCall = false;
        }

        (await ranInsideRelease.WaitAsync(Bound)).Should().BeFalse();
        IsHeld(gate).Should().BeFalse();
    }

    [Fact]
    public async Task Cancel_OfAWaiter_NeverRunsItsContinuationInline()
    {
        TGate gate = Create();
        TryAcquire(gate).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        Task<bool> ranInsideCancel = FailAndReportAsync(AcquireAsync(gate, cts.Token));

        t_insideCall = true;
        try
        {
            cts.Cancel();
        }
        finally
        {
            t_insideCall = false;
        }

        (await ranInsideCancel.WaitAsync(Bound)).Should().BeFalse("the waiter resumes asynchronously, not inside Cancel");
        Release(gate);
        IsHeld(gate).Should().BeFalse();
    }

    // ---- allocations ----

    [Fact]
    public void AcquireAndRelease_Uncontended_AllocateNothing()
    {
        TGate gate = Create();
        using var cts = new CancellationTokenSource();
        UncontendedCycles(gate, cts.Token, 200); // warm up (JIT tiers, statics)

        long before = GC.GetAllocatedBytesForCurrentThread();
        int synchronous = UncontendedCycles(gate, cts.Token, 1000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        synchronous.Should().Be(4000, "every uncontended acquire completes synchronously");
        allocated.Should().Be(0);
        IsHeld(gate).Should().BeFalse();
    }

    // ---- races: nothing lost ----

    [Fact]
    public async Task AcquireAsync_CancellationRacingRelease_EitherKeepsThePermitOrPassesItOn()
    {
        int kept = 0, passedOn = 0;
        await StepLoop.RunAsync(async step =>
        {
            TGate gate = Create();
            var random = new Random(1234);
            using var racer = new Racer();
            for (int i = 0; i < 2500; i++)
            {
                step();
                TryAcquire(gate).Should().BeTrue();
                using var cts = new CancellationTokenSource();
                ValueTask<TReleaser> b = AcquireAsync(gate, cts.Token);
                ValueTask<TReleaser> c = AcquireAsync(gate);

                racer.Race(() => Release(gate), cts.Cancel, random);

                // Both the release and the cancellation decide B's outcome synchronously: it is known now.
                if (b.IsCompletedSuccessfully)
                {
                    kept++;
                    AssertHeldAlone(gate, c, "B kept the permit");
                    Granted(b).Dispose();
                }
                else
                {
                    passedOn++;
                    b.IsCanceled.Should().BeTrue();
                    await FluentActions.Awaiting(() => b.AsTask()).Should().ThrowAsync<OperationCanceledException>();
                }

                c.IsCompletedSuccessfully.Should().BeTrue("the permit reached C either way");
                (await Within(c)).Dispose();
                IsHeld(gate).Should().BeFalse();
                Lines(gate).Waiting.Should().Be(0);
            }
        });

        (kept + passedOn).Should().Be(2500);
    }

    [Fact]
    public async Task AcquireAsync_ManualTimeoutRacingRelease_EitherKeepsThePermitOrPassesItOn()
    {
        var time = new CountingTimeProvider();
        await StepLoop.RunAsync(async step =>
        {
            TGate gate = Create(time);
            var random = new Random(4321);
            using var racer = new Racer();
            for (int i = 0; i < 2500; i++)
            {
                step();
                TryAcquire(gate).Should().BeTrue();
                ValueTask<TReleaser> b = AcquireAsync(gate, TimeSpan.FromSeconds(1));
                ValueTask<TReleaser> c = AcquireAsync(gate);

                racer.Race(() => Release(gate), () => time.Advance(TimeSpan.FromSeconds(1)), random);

                if (b.IsCompletedSuccessfully)
                {
                    AssertHeldAlone(gate, c, "B kept the permit");
                    Granted(b).Dispose();
                }
                else
                {
                    b.IsFaulted.Should().BeTrue();
                    await FluentActions.Awaiting(() => b.AsTask()).Should().ThrowAsync<TimeoutException>();
                }

                c.IsCompletedSuccessfully.Should().BeTrue("the permit reached C either way");
                (await Within(c)).Dispose();
                IsHeld(gate).Should().BeFalse();
                Lines(gate).Waiting.Should().Be(0);
            }
        });

        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_RealTimeoutRacingRelease_EitherKeepsThePermitOrPassesItOn()
    {
        await StepLoop.RunAsync(async step =>
        {
            TGate gate = Create();
            var random = new Random(99);
            for (int i = 0; i < 300; i++)
            {
                step();
                TryAcquire(gate).Should().BeTrue();
                ValueTask<TReleaser> b = AcquireAsync(gate, TimeSpan.FromMilliseconds(1));
                ValueTask<TReleaser> c = AcquireAsync(gate);
                Thread.SpinWait(random.Next(20_000)); // about the timer's resolution
                Release(gate);

                TReleaser bHolds;
                try
                {
                    bHolds = await Within(b);
                }
                catch (TimeoutException)
                {
                    (await Within(c)).Dispose();
                    IsHeld(gate).Should().BeFalse();
                    continue;
                }

                AssertHeldAlone(gate, c, "B kept the permit");
                bHolds.Dispose();
                (await Within(c)).Dispose();
                IsHeld(gate).Should().BeFalse();
                Lines(gate).Waiting.Should().Be(0);
            }
        });
    }

    [Fact]
    public async Task ManyTasks_WithRandomCancellationsAndTimeouts_KeepMutualExclusionAndLoseNothing()
    {
        const int Workers = 8;
        const int Attempts = 1500;
        TGate gate = Create();
        int inside = 0, overlaps = 0, acquired = 0, cancelled = 0, timedOut = 0, refused = 0;

        await StepLoop.RunAsync(step => Task.WhenAll(Enumerable.Range(0, Workers).Select(w => Task.Run(async () =>
        {
            var random = new Random(w);
            for (int i = 0; i < Attempts; i++)
            {
                step();
                using var cts = new CancellationTokenSource();
                try
                {
                    switch (random.Next(5))
                    {
                        case 0:
                            await AcquireAsync(gate).ConfigureAwait(false);
                            break;
                        case 1:
                            ValueTask<TReleaser> pending = AcquireAsync(gate, cts.Token);
                            if (random.Next(2) == 0)
                            {
                                cts.Cancel();
                            }
                            else
                            {
                                cts.CancelAfter(1);
                            }

                            await pending.ConfigureAwait(false);
                            break;
                        case 2:
                            await AcquireAsync(gate, TimeSpan.FromMilliseconds(random.Next(2))).ConfigureAwait(false);
                            break;
                        case 3:
                            cts.CancelAfter(1);
                            await AcquireAsync(gate, TimeSpan.FromMilliseconds(1), cts.Token).ConfigureAwait(false);
                            break;
                        default:
                            if (!TryAcquire(gate))
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
                Release(gate);
            }
        }))));

        overlaps.Should().Be(0);
        (acquired + cancelled + timedOut + refused).Should().Be(Workers * Attempts);
        acquired.Should().BePositive();
        IsHeld(gate).Should().BeFalse();
        Lines(gate).Waiting.Should().Be(0);
    }

    // ---- helpers ----

    /// <summary>The releaser of an acquire that has completed successfully (asserted first, so this never blocks).</summary>
    protected static TReleaser Granted(ValueTask<TReleaser> acquire)
    {
        acquire.IsCompletedSuccessfully.Should().BeTrue();
        return acquire.Result;
    }

    protected static Task<TReleaser> Within(ValueTask<TReleaser> pending) => pending.AsTask().WaitAsync(Bound);

    /// <summary>The permit is held by one party, and <paramref name="waiter"/> still waits for it.</summary>
    private void AssertHeldAlone(TGate gate, ValueTask<TReleaser> waiter, string because)
    {
        IsHeld(gate).Should().BeTrue(because);
        waiter.IsCompleted.Should().BeFalse(because);
        Lines(gate).Waiting.Should().Be(1, because);
    }

    private static async Task<bool> ResumeAndReportAsync(ValueTask<TReleaser> pending)
    {
        TReleaser releaser = await pending.ConfigureAwait(false);
        bool inline = t_insideCall;
        releaser.Dispose();
        return inline;
    }

    private static async Task<bool> FailAndReportAsync(ValueTask<TReleaser> pending)
    {
        try
        {
            (await pending.ConfigureAwait(false)).Dispose();
        }
        catch (OperationCanceledException)
        {
        }

        return t_insideCall;
    }

    /// <summary>Acquires and releases through every uncontended path; returns how many acquires completed synchronously.</summary>
    private int UncontendedCycles(TGate gate, CancellationToken token, int iterations)
    {
        int synchronous = 0;
        for (int i = 0; i < iterations; i++)
        {
            ValueTask<TReleaser> plain = AcquireAsync(gate);
            if (plain.IsCompletedSuccessfully)
            {
                synchronous++;
                plain.Result.Dispose();
            }

            ValueTask<TReleaser> cancellable = AcquireAsync(gate, token);
            if (cancellable.IsCompletedSuccessfully)
            {
                synchronous++;
                cancellable.Result.Dispose();
            }

            ValueTask<TReleaser> timed = AcquireAsync(gate, TimeSpan.FromSeconds(30), token);
            if (timed.IsCompletedSuccessfully)
            {
                synchronous++;
                timed.Result.Dispose();
            }

            if (TryAcquire(gate))
            {
                synchronous++;
                Release(gate);
            }
        }

        return synchronous;
    }

    /// <summary>A clock that runs <c>hook</c> each time a timer is armed, before arming it (and then fires it at once
    /// if asked): a point inside an acquire call after it joined the line.</summary>
    private sealed class HookedTimeProvider(Action hook, bool fireAtOnce = false) : FakeTimeProvider
    {
        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            hook();
            return base.CreateTimer(callback, state, fireAtOnce ? TimeSpan.Zero : dueTime, period);
        }
    }
}
