using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace AsyncIterTools.Tests;

/// <summary>The operators that take a <see cref="RateLimiter"/>.</summary>
public enum LimitedOperator
{
    Map,
    MapUnordered,
    GatherAsync,
    GatherSettledAsync,
    AsCompleted,
}

/// <summary>
/// The limiter overloads of Map, MapUnordered, GatherAsync, GatherSettledAsync and AsCompleted (one rule, in the shared
/// CompletionQueue): one lease per call, acquired before it starts and disposed however it ends; on top of
/// <c>maxConcurrency</c>; a refusal's <c>RetryAfter</c> waited on the operator's clock; a refusal without it fails the
/// operator with <see cref="InvalidOperationException"/>. Every test checks, with <see cref="CountingLimiter"/>, that
/// every lease was disposed exactly once.
/// </summary>
public sealed class LimiterContractTests
{
    public static TheoryData<LimitedOperator> Operators => new()
    {
        LimitedOperator.Map, LimitedOperator.MapUnordered, LimitedOperator.GatherAsync, LimitedOperator.GatherSettledAsync, LimitedOperator.AsCompleted,
    };

    /// <summary>The operators a consumer can break out of.</summary>
    public static TheoryData<LimitedOperator> Streaming => new() { LimitedOperator.Map, LimitedOperator.MapUnordered, LimitedOperator.AsCompleted };

    public static TheoryData<LimitedOperator, bool> StreamingWithWhatFails()
    {
        var data = new TheoryData<LimitedOperator, bool>();
        foreach (LimitedOperator op in Streaming)
        {
            data.Add(op, false);
            data.Add(op, true);
        }

        return data;
    }

    [Fact]
    public void NullLimiter_ThrowsAtTheCall()
    {
        var source = Sources.Of(SourceMode.Synchronous, 1);
        Func<CancellationToken, Task<int>>[] work = [_ => Task.FromResult(1)];
        static ValueTask<int> Identity(int x, CancellationToken ct) => new(x);
        RateLimiter limiter = null!;

        FluentActions.Invoking(() => source.Map(Identity, 1, limiter)).Should().Throw<ArgumentNullException>().WithParameterName("limiter");
        FluentActions.Invoking(() => source.MapUnordered(Identity, 1, limiter)).Should().Throw<ArgumentNullException>().WithParameterName("limiter");
        FluentActions.Invoking(() => { _ = AsyncIter.GatherAsync(work, 1, limiter); }).Should().Throw<ArgumentNullException>().WithParameterName("limiter");
        FluentActions.Invoking(() => { _ = AsyncIter.GatherAsync(work, 1, limiter, TimeProvider.System); }).Should().Throw<ArgumentNullException>().WithParameterName("limiter");
        FluentActions.Invoking(() => { _ = AsyncIter.GatherSettledAsync(work, 1, limiter); }).Should().Throw<ArgumentNullException>().WithParameterName("limiter");
        FluentActions.Invoking(() => { _ = AsyncIter.GatherSettledAsync(work, 1, limiter, TimeProvider.System); }).Should().Throw<ArgumentNullException>().WithParameterName("limiter");
        FluentActions.Invoking(() => AsyncIter.AsCompleted(work, 1, limiter)).Should().Throw<ArgumentNullException>().WithParameterName("limiter");
        source.Enumerators.Should().Be(0, "arguments are checked before anything is enumerated");
    }

    [Fact]
    public void OtherArguments_AreStillChecked()
    {
        using var limiter = new CountingLimiter();
        Func<CancellationToken, Task<int>>[] work = [_ => Task.FromResult(1)];
        FluentActions.Invoking(() => Sources.Of(SourceMode.Synchronous, 1).Map((x, _) => new ValueTask<int>(x), 0, limiter))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxConcurrency");
        FluentActions.Invoking(() => { _ = AsyncIter.GatherAsync(work, 0, limiter); }).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxConcurrency");
        FluentActions.Invoking(() => { _ = AsyncIter.GatherSettledAsync<int>(null!, 1, limiter); }).Should().Throw<ArgumentNullException>().WithParameterName("work");
        FluentActions.Invoking(() => AsyncIter.AsCompleted(work, 1, limiter, TimeSpan.FromSeconds(-2)))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
        limiter.Requests.Should().Be(0);
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task Success_EveryCallHoldsALease_AndEveryLeaseIsDisposed(LimitedOperator op)
    {
        using var limiter = new CountingLimiter();
        int running = 0;
        int runningWithoutLease = 0;
        async Task<int> Work(int i, CancellationToken ct)
        {
            int now = Interlocked.Increment(ref running);
            if (limiter.Held < now)
            {
                Interlocked.Increment(ref runningWithoutLease);
            }

            await Task.Yield();
            Interlocked.Decrement(ref running);
            return i;
        }

        List<int> results = await RunAsync(op, 40, Work, maxConcurrency: 4, limiter).WaitAsync(TestWork.Bound);

        results.Should().BeEquivalentTo(Enumerable.Range(0, 40));
        runningWithoutLease.Should().Be(0, "every call runs while holding its lease");
        limiter.Granted.Should().Be(40);
        limiter.PeakHeld.Should().BeInRange(1, 4, "leases are held only by the calls in flight");
        limiter.ShouldHaveReturnedEveryLease();
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task LimiterPermits_BoundTheCalls_OnTopOfMaxConcurrency(LimitedOperator op)
    {
        using var limiter = new CountingLimiter(new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 2, QueueLimit = 100 }));
        var probe = new ConcurrencyProbe(max: 2);

        Task<List<int>> run = RunAsync(op, 12, (i, ct) => probe.RunAsync(i, probe.Held, ct), maxConcurrency: 8, limiter);
        await probe.AssertHeldAtMaxThenReleaseAsync(); // two running, six more in flight waiting for a permit: none started
        List<int> results = await run.WaitAsync(TestWork.Bound);

        results.Should().BeEquivalentTo(Enumerable.Range(0, 12));
        probe.Peak.Should().Be(2);
        limiter.PeakHeld.Should().Be(2);
        limiter.ShouldHaveReturnedEveryLease();
        limiter.GetStatistics()!.CurrentAvailablePermits.Should().Be(2);
    }

    [Theory]
    [InlineData(LimitedOperator.Map, LimitedOperator.GatherAsync)]
    [InlineData(LimitedOperator.MapUnordered, LimitedOperator.AsCompleted)]
    [InlineData(LimitedOperator.GatherSettledAsync, LimitedOperator.Map)]
    public async Task TwoOperators_SharingAConcurrencyLimiter_NeverRunMoreThanItsPermits(LimitedOperator first, LimitedOperator second)
    {
        using var limiter = new CountingLimiter(new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 3, QueueLimit = 100 }));
        var probe = new ConcurrencyProbe(max: 3);
        Task<int> Work(int i, CancellationToken ct) => probe.RunAsync(i, probe.Held, ct);

        // Each operator alone would run 5 at once; together they want 10.
        Task<List<int>> a = RunAsync(first, 20, Work, maxConcurrency: 5, limiter);
        Task<List<int>> b = RunAsync(second, 20, Work, maxConcurrency: 5, limiter);
        await probe.AssertHeldAtMaxThenReleaseAsync();
        await Task.WhenAll(a, b).WaitAsync(TestWork.Bound);

        probe.Peak.Should().Be(3);
        probe.Started.Should().Be(40);
        limiter.PeakHeld.Should().Be(3);
        limiter.ShouldHaveReturnedEveryLease();
        limiter.GetStatistics()!.CurrentAvailablePermits.Should().Be(3);
    }

    [Theory]
    [MemberData(nameof(CallFailures))]
    public async Task CallThrows_EveryLeaseIsDisposed(LimitedOperator op, bool synchronously)
    {
        using var limiter = new CountingLimiter();
        Task<int> Work(int i, CancellationToken ct)
        {
            if (i == 7 && synchronously)
            {
                throw new InvalidDataException("call 7");
            }

            return WorkAsync(i, ct);
        }

        async Task<int> WorkAsync(int i, CancellationToken ct)
        {
            await Task.Yield();
            return i == 7 ? throw new InvalidDataException("call 7") : i;
        }

        Task<List<int>> run = RunAsync(op, 20, Work, maxConcurrency: 4, limiter);
        if (op == LimitedOperator.GatherSettledAsync)
        {
            // A failed call is a failed outcome; the others go on.
            (await run.WaitAsync(TestWork.Bound)).Should().HaveCount(20).And.ContainSingle(x => x == FailedOutcome);
            limiter.Granted.Should().Be(20);
        }
        else
        {
            await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidDataException>();
        }

        limiter.ShouldHaveReturnedEveryLease();
    }

    public static TheoryData<LimitedOperator, bool> CallFailures()
    {
        var data = new TheoryData<LimitedOperator, bool>();
        foreach (LimitedOperator op in Enum.GetValues<LimitedOperator>())
        {
            data.Add(op, false);
            data.Add(op, true);
        }

        return data;
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task Cancellation_WhileCallsRunAndOthersWaitForALease_DisposesEveryLease(LimitedOperator op)
    {
        var allRequested = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var limiter = new CountingLimiter(new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 2, QueueLimit = 100 }))
        {
            Gate = (n, _) =>
            {
                if (n == 5)
                {
                    allRequested.TrySetResult(true);
                }

                return Task.CompletedTask;
            },
        };
        var probe = new ConcurrencyProbe(max: 2);
        using var cts = new CancellationTokenSource();

        Task<List<int>> run = RunAsync(op, 50, (i, ct) => probe.RunAsync(i, probe.Held, ct), maxConcurrency: 6, limiter, cancellationToken: cts.Token);
        await probe.ReachedMax.WaitAsync(TestWork.Bound);  // two calls hold the permits
        await allRequested.Task.WaitAsync(TestWork.Bound); // four more wait in the limiter's queue
        await cts.CancelAsync();

        await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        probe.Started.Should().Be(2);
        probe.Cancelled.Should().Be(2);
        limiter.ShouldHaveReturnedEveryLease();
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        stats.CurrentAvailablePermits.Should().Be(2);
        stats.CurrentQueuedCount.Should().Be(0, "the waits for a lease were cancelled too");
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task LeaseGrantedAfterCancellation_StartsNothing_AndIsDisposed(LimitedOperator op)
    {
        // A limiter that grants late and ignores the token while it waits: requests 2.. are granted only after the cancel.
        var late = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var allRequested = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var limiter = new CountingLimiter
        {
            Gate = (n, _) =>
            {
                if (n == 3)
                {
                    allRequested.TrySetResult(true);
                }

                return n < 2 ? Task.CompletedTask : late.Task;
            },
        };
        var probe = new ConcurrencyProbe(max: 2);
        using var cts = new CancellationTokenSource();

        Task<List<int>> run = RunAsync(op, 10, (i, ct) => probe.RunAsync(i, probe.Held, ct), maxConcurrency: 4, limiter, cancellationToken: cts.Token);
        await probe.ReachedMax.WaitAsync(TestWork.Bound);
        await allRequested.Task.WaitAsync(TestWork.Bound);
        await cts.CancelAsync();
        late.SetResult(true);

        await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        probe.Started.Should().Be(2, "a lease granted after the cancellation starts nothing");
        limiter.Granted.Should().Be(4);
        limiter.ShouldHaveReturnedEveryLease();
    }

    [Theory, MemberData(nameof(Streaming))]
    public async Task ConsumerBreaksEarly_EveryLeaseIsDisposed(LimitedOperator op)
    {
        using var limiter = new CountingLimiter(new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 3, QueueLimit = 100 }));
        async Task<int> Work(int i, CancellationToken ct)
        {
            await Task.Yield();
            if (i >= 2)
            {
                await Task.Delay(Timeout.InfiniteTimeSpan, ct); // runs until the operator cancels it
            }

            return i;
        }

        var taken = new List<int>();
        await foreach (int x in Stream(op, 100, Work, maxConcurrency: 5, limiter))
        {
            taken.Add(x);
            if (taken.Count == 2)
            {
                break;
            }
        }

        taken.Should().BeEquivalentTo([0, 1]);
        limiter.ShouldHaveReturnedEveryLease();
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        stats.CurrentAvailablePermits.Should().Be(3);
        stats.CurrentQueuedCount.Should().Be(0);
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task RefusalWithRetryAfter_WaitsThatLongOnTheTimeProvider_ThenAsksAgain(LimitedOperator op)
    {
        var time = new CountingTimeProvider();
        using var limiter = new CountingLimiter { Refuse = n => n == 0 ? new CountingLimiter.Refusal(TimeSpan.FromSeconds(5)) : null };
        int started = 0;
        Task<int> Work(int i, CancellationToken ct)
        {
            Interlocked.Increment(ref started);
            return Task.FromResult(i);
        }

        Task<List<int>> run = RunAsync(op, 3, Work, maxConcurrency: 1, limiter, time);
        await time.WaitForArmedTimersAsync(1).WaitAsync(TestWork.Bound);
        limiter.Requests.Should().Be(1);

        time.Advance(TimeSpan.FromSeconds(4.9)); // fires every timer due by then, on this thread: the retry is not
        limiter.Requests.Should().Be(1, "the limiter is asked again only once RetryAfter has passed");
        started.Should().Be(0);
        run.IsCompleted.Should().BeFalse();

        time.Advance(TimeSpan.FromSeconds(0.1));
        List<int> results = await run.WaitAsync(TestWork.Bound);

        results.Should().BeEquivalentTo([0, 1, 2]);
        limiter.Requests.Should().Be(4);
        limiter.Refused.Should().Be(1);
        limiter.Granted.Should().Be(3);
        limiter.ShouldHaveReturnedEveryLease();
        time.ActiveTimers.Should().Be(0);
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task RefusalWithARetryAfterLongerThanATimerTakes_WaitsTheLongestATimerTakes_ThenAsksAgain(LimitedOperator op)
    {
        // A monthly quota, or TimeSpan.MaxValue for "not soon": a timer takes at most 4294967294 ms (about 49.7 days).
        var time = new CountingTimeProvider();
        using var limiter = new CountingLimiter { Refuse = n => n == 0 ? new CountingLimiter.Refusal(TimeSpan.FromDays(60)) : null };
        Task<List<int>> run = RunAsync(op, 1, (i, _) => Task.FromResult(i), maxConcurrency: 1, limiter, time);
        await time.WaitForArmedTimersAsync(1).WaitAsync(TestWork.Bound);

        time.Advance(TimeSpan.FromMilliseconds(4294967294 - 1));
        limiter.Requests.Should().Be(1);
        time.Advance(TimeSpan.FromMilliseconds(1));
        (await run.WaitAsync(TestWork.Bound)).Should().Equal(0);
        limiter.Requests.Should().Be(2, "asked again once the longest wait a timer takes had passed");
        limiter.ShouldHaveReturnedEveryLease();
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task RefusalWithRetryAfterZero_WaitsAMillisecond_SoALimiterThatKeepsRefusingNeverSpins(LimitedOperator op)
    {
        var time = new CountingTimeProvider();
        using var limiter = new CountingLimiter { Refuse = n => n < 2 ? new CountingLimiter.Refusal(TimeSpan.Zero) : null };

        Task<List<int>> run = RunAsync(op, 1, (i, _) => Task.FromResult(i), maxConcurrency: 1, limiter, time);
        await time.WaitForArmedTimersAsync(1).WaitAsync(TestWork.Bound);
        limiter.Requests.Should().Be(1, "a refusal with a RetryAfter of zero waits on the clock before asking again");

        time.Advance(TimeSpan.FromMilliseconds(1)); // the first wait's timer fires, and is disarmed, on this thread
        await time.WaitForArmedTimersAsync(1).WaitAsync(TestWork.Bound);
        limiter.Requests.Should().Be(2);

        time.Advance(TimeSpan.FromMilliseconds(1));
        (await run.WaitAsync(TestWork.Bound)).Should().Equal(0);
        limiter.Requests.Should().Be(3);
        limiter.ShouldHaveReturnedEveryLease();
        time.ActiveTimers.Should().Be(0);
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task Cancellation_DuringARetryAfterWait_EndsTheWait(LimitedOperator op)
    {
        var time = new CountingTimeProvider();
        using var limiter = new CountingLimiter { Refuse = _ => new CountingLimiter.Refusal(TimeSpan.FromMinutes(1)) };
        using var cts = new CancellationTokenSource();

        Task<List<int>> run = RunAsync(op, 3, (i, _) => Task.FromResult(i), maxConcurrency: 2, limiter, time, cts.Token);
        await time.WaitForArmedTimersAsync(2).WaitAsync(TestWork.Bound);
        await cts.CancelAsync();

        await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        limiter.Granted.Should().Be(0);
        limiter.ShouldHaveReturnedEveryLease();
        time.ActiveTimers.Should().Be(0, "the cancelled waits leave no timer behind");
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task RefusalWithoutRetryAfter_FailsTheOperator_AndThatCallNeverStarts(LimitedOperator op)
    {
        using var limiter = new CountingLimiter { Refuse = n => n == 2 ? new CountingLimiter.Refusal() : null };
        var started = new List<int>();
        Task<int> Work(int i, CancellationToken ct)
        {
            lock (started)
            {
                started.Add(i);
            }

            return Task.FromResult(i);
        }

        // maxConcurrency 1: request n is call n's.
        Task<List<int>> run = RunAsync(op, 10, Work, maxConcurrency: 1, limiter);

        // GatherSettledAsync included: a refused lease is not an outcome of that piece, it fails the whole gathering.
        (await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>())
            .Which.Message.Should().Contain("CountingLimiter(test)").And.Contain("refused");
        started.Should().Equal(0, 1);
        limiter.Refused.Should().Be(1);
        limiter.ShouldHaveReturnedEveryLease();
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task ALeaseThatCannotTellWhetherItWasGranted_FailsTheOperator_AndIsDisposed(LimitedOperator op)
    {
        using var limiter = new CountingLimiter { IsAcquiredThrows = true };
        var started = new StrongBox<int>();
        Task<List<int>> run = RunCountingStartsAsync(op, limiter, started);

        await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidDataException>("the limiter's exception, as when it throws");
        started.Value.Should().Be(0);
        limiter.Granted.Should().BeGreaterThan(0);
        limiter.ShouldHaveReturnedEveryLease();
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task ALimiterThatReturnsNoLease_FailsTheOperatorNamingIt(LimitedOperator op)
    {
        using var limiter = new CountingLimiter { ReturnsNull = true };
        var started = new StrongBox<int>();
        Task<List<int>> run = RunCountingStartsAsync(op, limiter, started);

        (await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>())
            .Which.Message.Should().Contain("CountingLimiter(test)").And.Contain("no lease");
        started.Value.Should().Be(0);
    }

    [Fact]
    public async Task GatherSettledAsync_ARefusalStopsTheRunningWork()
    {
        using var limiter = new CountingLimiter { Refuse = n => n == 3 ? new CountingLimiter.Refusal() : null };
        var probe = new ConcurrencyProbe(max: 3);
        var work = Enumerable.Range(0, 10).Select(i => (Func<CancellationToken, Task<int>>)(ct => probe.RunAsync(i, probe.Held, ct)));

        await FluentActions.Awaiting(() => AsyncIter.GatherSettledAsync(work, 4, limiter).WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<InvalidOperationException>();
        probe.Started.Should().Be(3);
        probe.Cancelled.Should().Be(3, "the work in flight is cancelled and awaited before the failure surfaces");
        limiter.ShouldHaveReturnedEveryLease();
    }

    [Fact]
    public async Task GatherSettledAsync_ALimiterThatThrows_FailsTheGathering_NotEachPieceThatNeverRan()
    {
        var limiter = new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 2, QueueLimit = 10 });
        limiter.Dispose(); // by its owner, while a gathering still uses it
        await GatherSettledShouldFailAsAWholeAsync<ObjectDisposedException>(limiter);
    }

    /// <summary>The same for a limiter that throws <see cref="OperationCanceledException"/> of its own (not for the
    /// gathering's token, which nobody cancelled): a failure of the limiter, not a cancellation, nor a piece's outcome.</summary>
    [Fact]
    public async Task GatherSettledAsync_ALimiterThatThrowsACancellationOfItsOwn_FailsTheGathering_NotEachPieceThatNeverRan()
    {
        using var limiter = new CountingLimiter { Gate = (_, _) => Task.FromCanceled(new CancellationToken(canceled: true)) };
        await GatherSettledShouldFailAsAWholeAsync<OperationCanceledException>(limiter);
    }

    private static async Task GatherSettledShouldFailAsAWholeAsync<TException>(RateLimiter limiter)
        where TException : Exception
    {
        int started = 0;
        var work = Enumerable.Range(0, 5).Select(i => (Func<CancellationToken, Task<int>>)(_ =>
        {
            Interlocked.Increment(ref started);
            return Task.FromResult(i);
        }));

        await FluentActions.Awaiting(() => AsyncIter.GatherSettledAsync(work, 2, limiter).WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<TException>("the limiter cannot serve the gathering: no piece has an outcome of its own");
        started.Should().Be(0);
    }

    /// <summary>
    /// A lease that can be lost (its <c>LEASE_LOST</c> metadata, as a PostgresSemaphore's limiter gives): when it fires
    /// while the call runs, the call's token is cancelled, and the call's failure is the loss, said so.
    /// </summary>
    [Theory, MemberData(nameof(Operators))]
    public async Task ALeaseLostWhileItsCallRuns_CancelsTheCallsToken_AndTheCallFailsAsTheLoss(LimitedOperator op)
    {
        using var lost = new CancellationTokenSource();
        using var limiter = new CountingLimiter { LeaseLost = lost.Token };
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async Task<int> Work(int i, CancellationToken ct)
        {
            started.TrySetResult();
            await new TaskCompletionSource().Task.WaitAsync(ct); // runs until its token is cancelled
            return i;
        }

        Task<List<int>> run = RunAsync(op, 1, Work, maxConcurrency: 1, limiter);
        await started.Task.WaitAsync(TestWork.Bound);
        await lost.CancelAsync();

        if (op == LimitedOperator.GatherSettledAsync)
        {
            (await run.WaitAsync(TestWork.Bound)).Should().Equal(FailedOutcome);
        }
        else
        {
            (await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>())
                .WithMessage("The lease of the rate limiter CountingLimiter(test) was lost while the call ran*")
                .WithInnerException<OperationCanceledException>();
        }

        limiter.ShouldHaveReturnedEveryLease();
    }

    /// <summary>
    /// A lease that can be lost but holds: a call that fails on its own fails as itself, not as a loss of its lease.
    /// </summary>
    [Theory, MemberData(nameof(Operators))]
    public async Task ACallThatFailsWhileItsLeaseThatCanBeLostStillHolds_FailsAsItself(LimitedOperator op)
    {
        using var lost = new CancellationTokenSource(); // never cancelled
        using var limiter = new CountingLimiter { LeaseLost = lost.Token };
        Task<int> Work(int i, CancellationToken ct) => Task.FromException<int>(new InvalidDataException("call"));

        Task<List<int>> run = RunAsync(op, 1, Work, maxConcurrency: 1, limiter);

        if (op == LimitedOperator.GatherSettledAsync)
        {
            (await run.WaitAsync(TestWork.Bound)).Should().Equal(FailedOutcome);
        }
        else
        {
            await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowExactlyAsync<InvalidDataException>();
        }

        limiter.ShouldHaveReturnedEveryLease();
    }

    /// <summary>A lease that is <see cref="IAsyncDisposable"/> (its release takes time, as a PostgresSemaphore's) is
    /// released, and that release awaited, before the operator ends: "none once it has ended" holds at the limiter.</summary>
    [Theory, MemberData(nameof(Operators))]
    public async Task AnAsynchronouslyReleasedLease_IsBackBeforeTheOperatorEnds(LimitedOperator op)
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var limiter = new CountingLimiter { AsyncRelease = () => release.Task };

        Task<List<int>> run = RunAsync(op, 1, (i, _) => Task.FromResult(i), maxConcurrency: 1, limiter);
        await limiter.ReleaseStarted.Task.WaitAsync(TestWork.Bound);
        run.IsCompleted.Should().BeFalse("the operator waits for its lease to be back");
        release.SetResult();

        (await run.WaitAsync(TestWork.Bound)).Should().Equal(0);
        limiter.ShouldHaveReturnedEveryLease();
    }

    /// <summary>
    /// "After a failure nothing new starts": a lease granted after a call failed (or after the limiter failed for a call,
    /// throwing at its acquire) starts nothing, also while the consumer is still busy with an earlier item and has not
    /// taken the failure yet.
    /// </summary>
    [Theory, MemberData(nameof(StreamingWithWhatFails))]
    public async Task LeaseGrantedAfterACallFailed_StartsNothing_WhileTheConsumerHasNotTakenTheFailure(LimitedOperator op, bool limiterFails)
    {
        var failCall1 = new TaskCompletionSource(); // continuations inline: call 1 (or its acquire) fails inside SetResult
        var grantLease2 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var limiter = new CountingLimiter
        {
            Gate = (n, _) => n switch
            {
                1 when limiterFails => failCall1.Task.ContinueWith(
                    _ => throw new InvalidDataException("the limiter, for call 1"), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default),
                2 => grantLease2.Task,
                _ => Task.CompletedTask,
            },
        };
        int started2 = 0;
        async Task<int> Work(int i, CancellationToken ct)
        {
            if (i == 1)
            {
                await failCall1.Task.ConfigureAwait(false);
                throw new InvalidDataException("call 1");
            }

            if (i == 2)
            {
                Interlocked.Increment(ref started2);
            }

            return i;
        }

        await using IAsyncEnumerator<int> e = Stream(op, 3, Work, maxConcurrency: 3, limiter).GetAsyncEnumerator();

        // Started on the pool: the limiter's awaits (its gate) capture no context, so its failure runs on inline too.
        (await Task.Run(() => e.MoveNextAsync().AsTask()).WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);

        TestWork.CompleteInline(failCall1.SetResult); // while the consumer is busy with 0
        limiter.GrantedDisposed.Should().Be(limiterFails ? 1 : 2, "the calls that held a lease have ended and given it back");
        grantLease2.SetResult();
        int granted = limiterFails ? 2 : 3;
        SpinWait.SpinUntil(() => limiter.Granted == granted && limiter.Held == 0, TestWork.Bound).Should().BeTrue("the late lease goes back at once");

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidDataException>();
        limiter.ShouldHaveReturnedEveryLease();
        started2.Should().Be(0, "no call starts after another failed");
    }

    /// <summary>The limiter overloads keep their operator's order: Map's results in source order, MapUnordered's in
    /// completion order. Call 1 ends before call 0.</summary>
    [Theory]
    [InlineData(LimitedOperator.Map)]
    [InlineData(LimitedOperator.MapUnordered)]
    public async Task WithALimiter_MapYieldsInSourceOrder_MapUnorderedInCompletionOrder(LimitedOperator op)
    {
        using var limiter = new CountingLimiter();
        var calls = new[] { new TaskCompletionSource<int>(), new TaskCompletionSource<int>() }; // continuations inline
        var bothStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int started = 0;
        Task<int> Work(int i, CancellationToken ct)
        {
            if (Interlocked.Increment(ref started) == 2)
            {
                bothStarted.SetResult();
            }

            return calls[i].Task;
        }

        Task<List<int>> results = Task.Run(() => Stream(op, 2, Work, maxConcurrency: 2, limiter).ToListAsync().AsTask());
        await bothStarted.Task.WaitAsync(TestWork.Bound);
        TestWork.CompleteInline(() => calls[1].SetResult(1)); // call 1 ends, and is posted, first
        TestWork.CompleteInline(() => calls[0].SetResult(0));

        (await results.WaitAsync(TestWork.Bound)).Should().Equal(op == LimitedOperator.Map ? [0, 1] : [1, 0]);
        limiter.ShouldHaveReturnedEveryLease();
    }

    /// <summary>A source whose every move completes later, once the consumer waits for it (as most real sources' do): each
    /// of those moves is a success, not a failure that would hold back the calls granted a lease after it.</summary>
    [Theory]
    [InlineData(LimitedOperator.Map)]
    [InlineData(LimitedOperator.MapUnordered)]
    public async Task OverASourceWhoseMovesCompleteLater_EveryElementIsMapped_EachCallHoldingALease(LimitedOperator op)
    {
        using var limiter = new CountingLimiter();
        TaskCompletionSource[] moves = [.. Enumerable.Range(0, 3).Select(_ => new TaskCompletionSource())]; // continuations inline
        static async IAsyncEnumerable<int> Source(TaskCompletionSource[] moves)
        {
            for (int i = 0; i < moves.Length; i++)
            {
                await moves[i].Task;
                yield return i;
            }
        }

        Func<int, CancellationToken, ValueTask<int>> selector = (i, _) => new ValueTask<int>(i * 2);
        await using IAsyncEnumerator<int> e = (op == LimitedOperator.Map ? Source(moves).Map(selector, 2, limiter) : Source(moves).MapUnordered(selector, 2, limiter)).GetAsyncEnumerator();
        for (int i = 0; i < moves.Length; i++)
        {
            ValueTask<bool> move = e.MoveNextAsync(); // waits for the source's move, which is pending
            TestWork.CompleteInline(moves[i].SetResult);
            (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
            e.Current.Should().Be(i * 2);
        }

        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeFalse();
        limiter.Granted.Should().Be(3);
        limiter.ShouldHaveReturnedEveryLease();
    }

    /// <summary>
    /// docs/asynciter.md, "Failures stop the work": after the source fails, nothing new starts, also a call whose lease
    /// is granted before the consumer has taken that failure.
    /// </summary>
    [Theory]
    [InlineData(LimitedOperator.Map)]
    [InlineData(LimitedOperator.MapUnordered)]
    public async Task LeaseGrantedAfterTheSourceFailed_StartsNothing_WhileTheConsumerHasNotTakenTheFailure(LimitedOperator op)
    {
        var grantLease1 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var limiter = new CountingLimiter { Gate = (n, _) => n == 1 ? grantLease1.Task : Task.CompletedTask };
        var source = new TestWork.GatedMoveSource(ready: 2); // items 0 and 1 at once; the move to item 2 waits
        int started1 = 0;
        Func<int, CancellationToken, ValueTask<int>> selector = (i, _) =>
        {
            if (i == 1)
            {
                Interlocked.Increment(ref started1);
            }

            return new ValueTask<int>(i);
        };
        await using IAsyncEnumerator<int> e = (op == LimitedOperator.Map ? source.Map(selector, 3, limiter) : source.MapUnordered(selector, 3, limiter)).GetAsyncEnumerator();

        // Started on the pool: the limiter's awaits (its gate) capture no context.
        (await Task.Run(() => e.MoveNextAsync().AsTask()).WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);

        TestWork.CompleteInline(() => source.FailMove(new InvalidDataException("the source failed"))); // while the consumer is busy with 0
        grantLease1.SetResult();
        SpinWait.SpinUntil(() => limiter.Granted == 2 && limiter.Held == 0, TestWork.Bound).Should().BeTrue("the late lease goes back at once");

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidDataException>();
        limiter.ShouldHaveReturnedEveryLease();
        started1.Should().Be(0, "no call starts after the source failed");
    }

    /// <summary>
    /// A failing call's lease goes back only once its failure is recorded: a limiter that hands a returned permit
    /// straight on (inline) does not start the next call. GatherSettledAsync, where a failure is one more outcome, runs it.
    /// </summary>
    [Theory]
    [InlineData(LimitedOperator.GatherAsync)]
    [InlineData(LimitedOperator.Map)]
    [InlineData(LimitedOperator.MapUnordered)]
    [InlineData(LimitedOperator.AsCompleted)]
    [InlineData(LimitedOperator.GatherSettledAsync)]
    public async Task APermitHandedOnInlineByAFailingCall_StartsNothingMore_ExceptInGatherSettledAsync(LimitedOperator op)
    {
        using var limiter = new InlineOnePermitLimiter();
        var fail0 = new TaskCompletionSource(); // continuations inline
        int started1 = 0;
        async Task<int> Work(int i, CancellationToken ct)
        {
            if (i == 0)
            {
                await fail0.Task.ConfigureAwait(false);
                throw new InvalidDataException("call 0");
            }

            Interlocked.Increment(ref started1);
            return i;
        }

        // Started on the pool (no SynchronizationContext), as from a service's code.
        Task<List<int>> run = Task.Run(() => RunAsync(op, 2, Work, maxConcurrency: 2, limiter));
        SpinWait.SpinUntil(() => limiter.Waiting == 1, TestWork.Bound).Should().BeTrue("call 1 waits for the permit call 0 holds");
        TestWork.CompleteInline(fail0.SetResult);

        if (op == LimitedOperator.GatherSettledAsync)
        {
            (await run.WaitAsync(TestWork.Bound)).Should().Equal(FailedOutcome, 1);
            started1.Should().Be(1);
        }
        else
        {
            await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidDataException>();
            started1.Should().Be(0, "no call starts after another failed");
        }

        limiter.Held.Should().Be(0);
    }

    /// <summary>One permit; a returned permit goes to the oldest waiter at once, its continuation inline.</summary>
    private sealed class InlineOnePermitLimiter : RateLimiter
    {
        private readonly Queue<TaskCompletionSource<RateLimitLease>> _waiters = new();
        private bool _taken;
        private int _held;

        public int Waiting
        {
            get { lock (_waiters) { return _waiters.Count; } }
        }

        public int Held => Volatile.Read(ref _held);

        public override TimeSpan? IdleDuration => null;

        public override RateLimiterStatistics? GetStatistics() => null;

        protected override RateLimitLease AttemptAcquireCore(int permitCount) => throw new NotSupportedException();

        protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken)
        {
            lock (_waiters)
            {
                if (!_taken)
                {
                    _taken = true;
                    return new(new Lease(this));
                }

                var waiter = new TaskCompletionSource<RateLimitLease>();
                _waiters.Enqueue(waiter);
                return new(waiter.Task);
            }
        }

        private void Release()
        {
            TaskCompletionSource<RateLimitLease>? next;
            lock (_waiters)
            {
                if (!_waiters.TryDequeue(out next))
                {
                    _taken = false;
                    return;
                }
            }

            next.SetResult(new Lease(this));
        }

        private sealed class Lease : RateLimitLease
        {
            private readonly InlineOnePermitLimiter _owner;
            private int _disposed;

            public Lease(InlineOnePermitLimiter owner)
            {
                _owner = owner;
                Interlocked.Increment(ref owner._held);
            }

            public override bool IsAcquired => true;

            public override IEnumerable<string> MetadataNames => [];

            public override bool TryGetMetadata(string metadataName, out object? metadata)
            {
                metadata = null;
                return false;
            }

            protected override void Dispose(bool disposing)
            {
                if (Interlocked.Exchange(ref _disposed, 1) == 0)
                {
                    Interlocked.Decrement(ref _owner._held);
                    _owner.Release();
                }
            }
        }
    }

    /// <summary>
    /// Adversarial: the operator's token is cancelled from another thread at a random point while leases are being
    /// handed from finishing calls to waiting ones. Whatever the interleaving, no permit of the shared limiter leaks.
    /// </summary>
    [Theory, MemberData(nameof(Operators))]
    public async Task CancellationRacingLeaseHandOff_NeverLeaksAPermit(LimitedOperator op)
    {
        var random = new Random(1234 + (int)op);
        using var limiter = new CountingLimiter(new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 2, QueueLimit = 1_000 }));
        int cancelledRuns = 0;
        for (int round = 0; round < 200; round++)
        {
            var cts = new CancellationTokenSource(); // not disposed: the cancel may still be running after the round
            int cancelAt = random.Next(0, 25);
            int started = 0;
            async Task<int> Work(int i, CancellationToken ct)
            {
                if (Interlocked.Increment(ref started) == cancelAt)
                {
                    _ = Task.Run(cts.Cancel);
                }

                await Task.Yield();
                return i;
            }

            try
            {
                (await RunAsync(op, 20, Work, maxConcurrency: 4, limiter, cancellationToken: cts.Token).WaitAsync(TestWork.Bound))
                    .Should().BeEquivalentTo(Enumerable.Range(0, 20));
            }
            catch (OperationCanceledException)
            {
                cancelledRuns++;
            }

            limiter.ShouldHaveReturnedEveryLease();
            limiter.GetStatistics()!.CurrentAvailablePermits.Should().Be(2, $"round {round}");
        }

        cancelledRuns.Should().BePositive("the race was exercised");
    }

    // Leases released asynchronously, whose release fails, or lost before the call starts (a scripted limiter).

    private sealed class BoomException() : Exception("boom");

    private sealed class ReleaseFailedException() : Exception("release failed");

    /// <summary>A limiter whose request n is answered by <c>answer(n, token)</c>.</summary>
    private sealed class ScriptedLimiter(Func<int, CancellationToken, ValueTask<RateLimitLease>> answer) : RateLimiter
    {
        private int _requests;

        public TaskCompletionSource SecondRequest { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override TimeSpan? IdleDuration => null;

        public override RateLimiterStatistics? GetStatistics() => null;

        protected override RateLimitLease AttemptAcquireCore(int permitCount) => throw new NotSupportedException();

        protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken)
        {
            int n = Interlocked.Increment(ref _requests) - 1;
            if (n == 1)
            {
                SecondRequest.TrySetResult();
            }

            return answer(n, cancellationToken);
        }
    }

    /// <summary>
    /// A lease, IAsyncDisposable with the given release (counted in <see cref="Releases"/>); LEASE_LOST when
    /// <paramref name="lost"/> can be cancelled. Granted unless <see cref="Grants"/> says otherwise.
    /// </summary>
    private sealed class TestLease(Func<ValueTask> release, CancellationToken lost = default) : RateLimitLease, IAsyncDisposable
    {
        private int _releases;

        public TaskCompletionSource ReleaseStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>What <see cref="IsAcquired"/> answers: true, false (a refusal without RetryAfter), or null to throw
        /// <see cref="InvalidDataException"/> (a lease that cannot tell).</summary>
        public bool? Grants { get; init; } = true;

        /// <summary>How many times it was disposed, either way.</summary>
        public int Releases => Volatile.Read(ref _releases);

        public override bool IsAcquired => Grants ?? throw new InvalidDataException("the lease cannot tell");

        public override IEnumerable<string> MetadataNames => lost.CanBeCanceled ? ["LEASE_LOST"] : [];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = lost.CanBeCanceled && metadataName == "LEASE_LOST" ? lost : null;
            return metadata is not null;
        }

        public ValueTask DisposeAsync()
        {
            Interlocked.Increment(ref _releases);
            ReleaseStarted.TrySetResult();
            return release();
        }

        protected override void Dispose(bool disposing) => Interlocked.Increment(ref _releases);
    }

    /// <summary>
    /// A call held back by a failure whose lease's release throws still ends only after that failure is posted: the
    /// first failure wins.
    /// </summary>
    [Fact]
    public async Task AHeldBackCallWhoseLeaseReleaseThrows_DoesNotComeOutAheadOfTheFirstFailure()
    {
        var releaseFirst = new TaskCompletionSource(); // inline continuations: the test drives the order
        var firstLease = new TestLease(() => new ValueTask(releaseFirst.Task));
        var secondGrant = new TaskCompletionSource<RateLimitLease>(); // inline continuations
        var limiter = new ScriptedLimiter((n, _) => n == 0 ? new ValueTask<RateLimitLease>(firstLease) : new ValueTask<RateLimitLease>(secondGrant.Task));
        int secondRan = 0;
        var work = new Func<CancellationToken, Task<int>>[]
        {
            _ => Task.FromException<int>(new BoomException()),
            _ => { Interlocked.Increment(ref secondRan); return Task.FromResult(2); },
        };

        // Started on a pool thread (no context); once the outer task completes, GatherAsync's synchronous part has run:
        // both calls started, call 0 failed (the operator is stopped) and its lease is going back, call 1 awaits its grant.
        Task<int[]> gathered = await Task.Factory.StartNew(
            () => AsyncIter.GatherAsync(work, 2, limiter), CancellationToken.None, TaskCreationOptions.None, TaskScheduler.Default);
        firstLease.ReleaseStarted.Task.IsCompleted.Should().BeTrue();
        limiter.SecondRequest.Task.IsCompleted.Should().BeTrue();

        // Granted now: held back (the operator failed); its lease's release throws.
        secondGrant.SetResult(new TestLease(() => ValueTask.FromException(new ReleaseFailedException())));
        releaseFirst.SetResult(); // now the failing call ends, and its failure is posted

        await FluentActions.Awaiting(() => gathered.WaitAsync(TestWork.Bound)).Should().ThrowExactlyAsync<BoomException>("the first failure wins; the held-back call never ran");
        secondRan.Should().Be(0);
    }

    /// <summary>
    /// GatherAsync: a piece that failed before the caller cancelled is thrown as itself (docs/asynciter.md:349-350),
    /// also when the cancellation comes while its lease is being released asynchronously.
    /// </summary>
    [Fact]
    public async Task GatherAsync_AFailureBeforeTheCancellation_TakenAfterItsLeaseWasReleased_IsThrownAsItself()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var lease = new TestLease(() => new ValueTask(release.Task));
        var limiter = new ScriptedLimiter((_, _) => new ValueTask<RateLimitLease>(lease));
        using var cts = new CancellationTokenSource();
        var work = new Func<CancellationToken, Task<int>>[] { _ => Task.FromException<int>(new BoomException()) };

        Task<int[]> gathered = AsyncIter.GatherAsync(work, 1, limiter, cts.Token);
        await lease.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // the piece has failed; its lease is going back
        await cts.CancelAsync();
        release.SetResult();

        await FluentActions.Awaiting(() => gathered.WaitAsync(TestWork.Bound)).Should().ThrowExactlyAsync<BoomException>("the failure came before the cancellation");
    }

    /// <summary>
    /// AsCompleted: a failure that came before the deadline is thrown as is (docs/asynciter.md:351-352), also when the
    /// deadline passes while its lease is being released asynchronously.
    /// </summary>
    [Fact]
    public async Task AsCompleted_AFailureBeforeTheDeadline_TakenAfterItsLeaseWasReleased_IsThrownAsIs()
    {
        var time = new CountingTimeProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var lease = new TestLease(() => new ValueTask(release.Task));
        var limiter = new ScriptedLimiter((_, _) => new ValueTask<RateLimitLease>(lease));
        var work = new Func<CancellationToken, Task<int>>[] { _ => Task.FromException<int>(new BoomException()) };

        Task<List<int>> all = AsyncIter.AsCompleted(work, null, limiter, TimeSpan.FromSeconds(10), time).ToListAsync().AsTask();
        await lease.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // the work has failed; its lease is going back
        time.Advance(TimeSpan.FromSeconds(11));
        release.SetResult();

        await FluentActions.Awaiting(() => all.WaitAsync(TestWork.Bound)).Should().ThrowExactlyAsync<BoomException>("the failure came before the deadline");
    }

    /// <summary>
    /// A lease whose LEASE_LOST token has already fired when it is granted holds no permit: the call does not start
    /// (no user code runs without the permit), and fails as the loss.
    /// </summary>
    [Fact]
    public async Task ALeaseAlreadyLostWhenGranted_StartsNoCall_AndTheCallFailsAsTheLoss()
    {
        using var lost = new CancellationTokenSource();
        await lost.CancelAsync();
        var limiter = new ScriptedLimiter((_, _) => new ValueTask<RateLimitLease>(new TestLease(() => default, lost.Token)));
        int ran = 0;

        Func<Task> act = async () => await AsyncEnumerable.Range(0, 1)
            .Map((i, _) => { Interlocked.Increment(ref ran); return new ValueTask<int>(i); }, 1, limiter)
            .ToListAsync();

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("The lease of the rate limiter * was lost before the call started*");
        ran.Should().Be(0, "a lease already lost holds no permit, so the call must not run under it");
    }

    /// <summary>
    /// AsCompleted: a result that came before the deadline is still yielded (docs/asynciter.md, AsCompleted), also when
    /// the deadline passes while its lease is being released asynchronously, as it would be without a limiter.
    /// </summary>
    [Fact]
    public async Task AsCompleted_AResultBeforeTheDeadline_TakenAfterItsLeaseWasReleased_IsStillYielded()
    {
        var time = new CountingTimeProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var lease = new TestLease(() => new ValueTask(release.Task));
        var limiter = new ScriptedLimiter((_, _) => new ValueTask<RateLimitLease>(lease));
        var work = new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(42) };
        var seen = new List<int>();
        async Task ConsumeAsync()
        {
            await foreach (int x in AsyncIter.AsCompleted(work, null, limiter, TimeSpan.FromSeconds(10), time))
            {
                seen.Add(x);
            }
        }

        Task all = ConsumeAsync();
        await lease.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // the work returned 42; its lease is going back
        time.Advance(TimeSpan.FromSeconds(11));
        release.SetResult();

        await FluentActions.Awaiting(() => all.WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>("the deadline passed before the work's end was taken");
        seen.Should().Equal([42], "results that completed before the deadline are still yielded");
        lease.Releases.Should().Be(1);
    }

    /// <summary>
    /// A lease not granted (refused without a RetryAfter, or unable to tell) is disposed as every lease is: one that is
    /// IAsyncDisposable with DisposeAsync, awaited before the operator ends (docs/asynciter.md, Limiters).
    /// </summary>
    [Theory]
    [InlineData(LimitedOperator.GatherAsync, false)]
    [InlineData(LimitedOperator.GatherSettledAsync, false)]
    [InlineData(LimitedOperator.Map, false)]
    [InlineData(LimitedOperator.MapUnordered, null)]
    [InlineData(LimitedOperator.AsCompleted, null)]
    [InlineData(LimitedOperator.GatherAsync, null)]
    public async Task ALeaseNotGranted_ThatIsAsyncDisposable_IsReleasedWithDisposeAsync_BeforeTheOperatorEnds(LimitedOperator op, bool? grants)
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var lease = new TestLease(() => new ValueTask(release.Task)) { Grants = grants };
        var limiter = new ScriptedLimiter((_, _) => new ValueTask<RateLimitLease>(lease));
        int ran = 0;

        Task<List<int>> run = RunAsync(op, 1, (i, _) => { Interlocked.Increment(ref ran); return Task.FromResult(i); }, maxConcurrency: 1, limiter);
        await Task.WhenAny(run, lease.ReleaseStarted.Task).WaitAsync(TestWork.Bound);
        lease.ReleaseStarted.Task.IsCompleted.Should().BeTrue("an IAsyncDisposable lease is disposed with DisposeAsync");
        run.IsCompleted.Should().BeFalse("its DisposeAsync is awaited before the operator ends");
        release.SetResult();

        if (grants is null)
        {
            await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidDataException>();
        }
        else
        {
            await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>().WithMessage("*refused*");
        }

        ran.Should().Be(0);
        lease.Releases.Should().Be(1);
    }

    /// <summary>
    /// The first failure wins: a call's failure is not replaced by the failure of its lease's release, which comes after
    /// it (GatherSettledAsync: the piece's outcome is the call's failure).
    /// </summary>
    [Theory, MemberData(nameof(Operators))]
    public async Task ACallsFailure_IsNotReplacedByTheFailureOfItsLeasesRelease(LimitedOperator op)
    {
        var limiter = new ScriptedLimiter((_, _) => new ValueTask<RateLimitLease>(new TestLease(() => ValueTask.FromException(new ReleaseFailedException()))));
        Func<CancellationToken, Task<int>>[] work = [_ => Task.FromException<int>(new BoomException())];

        if (op == LimitedOperator.GatherSettledAsync)
        {
            Outcome<int>[] outcomes = await AsyncIter.GatherSettledAsync(work, 1, limiter).WaitAsync(TestWork.Bound);
            outcomes.Should().ContainSingle().Which.Exception.Should().BeOfType<BoomException>();
            return;
        }

        Task<List<int>> run = RunAsync(op, 1, (_, _) => Task.FromException<int>(new BoomException()), maxConcurrency: 1, limiter);
        await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowExactlyAsync<BoomException>("the call failed first; its lease's release failed after it");
    }

    /// <summary>
    /// A lease whose release fails after its call succeeded is a failure of the limiter, as a limiter that throws is: the
    /// operator fails with it, GatherSettledAsync included (not one piece's outcome, whose work succeeded).
    /// </summary>
    [Theory, MemberData(nameof(Operators))]
    public async Task ALeasesReleaseFailingAfterItsCallSucceeded_FailsTheOperator(LimitedOperator op)
    {
        var limiter = new ScriptedLimiter((n, _) => new ValueTask<RateLimitLease>(
            new TestLease(() => n == 1 ? ValueTask.FromException(new ReleaseFailedException()) : default)));
        int ran = 0;

        Task<List<int>> run = RunAsync(op, 3, (i, _) => { Interlocked.Increment(ref ran); return Task.FromResult(i); }, maxConcurrency: 1, limiter);

        await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowExactlyAsync<ReleaseFailedException>();
        ran.Should().Be(2, "nothing starts after the limiter failed");
    }

    /// <summary>Runs <paramref name="op"/> over three calls, one at a time, that only count their starts in <paramref name="started"/>.</summary>
    private static Task<List<int>> RunCountingStartsAsync(LimitedOperator op, RateLimiter limiter, StrongBox<int> started) =>
        RunAsync(op, 3, (i, _) => { Interlocked.Increment(ref started.Value); return Task.FromResult(i); }, maxConcurrency: 1, limiter);

    /// <summary>What <see cref="RunAsync"/> reports for a failed outcome of GatherSettledAsync.</summary>
    private const int FailedOutcome = -1;

    /// <summary>
    /// Runs <paramref name="op"/> over calls 0 .. <paramref name="count"/>-1 with <paramref name="work"/> and returns its
    /// results (in the operator's order). GatherSettledAsync's failed outcomes come back as <see cref="FailedOutcome"/>.
    /// </summary>
    private static async Task<List<int>> RunAsync(
        LimitedOperator op,
        int count,
        Func<int, CancellationToken, Task<int>> work,
        int maxConcurrency,
        RateLimiter limiter,
        TimeProvider? timeProvider = null,
        CancellationToken cancellationToken = default)
    {
        IEnumerable<Func<CancellationToken, Task<int>>> Factories() =>
            Enumerable.Range(0, count).Select(i => (Func<CancellationToken, Task<int>>)(ct => work(i, ct)));
        switch (op)
        {
            case LimitedOperator.GatherAsync:
                return [.. await AsyncIter.GatherAsync(Factories(), maxConcurrency, limiter, timeProvider, cancellationToken)];
            case LimitedOperator.GatherSettledAsync:
                Outcome<int>[] outcomes = await AsyncIter.GatherSettledAsync(Factories(), maxConcurrency, limiter, timeProvider, cancellationToken);
                return [.. outcomes.Select(o => o.IsSuccess ? o.Value : FailedOutcome)];
            default:
                return await Stream(op, count, work, maxConcurrency, limiter, timeProvider).ToListAsync(cancellationToken);
        }
    }

    /// <summary>The streaming operators (Map, MapUnordered, AsCompleted) over calls 0 .. <paramref name="count"/>-1.</summary>
    private static IAsyncEnumerable<int> Stream(
        LimitedOperator op,
        int count,
        Func<int, CancellationToken, Task<int>> work,
        int maxConcurrency,
        RateLimiter limiter,
        TimeProvider? timeProvider = null)
    {
        var source = Sources.From(Enumerable.Range(0, count));
        return op switch
        {
            LimitedOperator.Map => source.Map((i, ct) => new ValueTask<int>(work(i, ct)), maxConcurrency, limiter, timeProvider),
            LimitedOperator.MapUnordered => source.MapUnordered((i, ct) => new ValueTask<int>(work(i, ct)), maxConcurrency, limiter, timeProvider),
            LimitedOperator.AsCompleted => AsyncIter.AsCompleted(
                Enumerable.Range(0, count).Select(i => (Func<CancellationToken, Task<int>>)(ct => work(i, ct))), maxConcurrency, limiter, timeout: null, timeProvider),
            _ => throw new ArgumentOutOfRangeException(nameof(op)),
        };
    }

    /// <summary>
    /// docs/asynciter.md, AsCompleted: "results that completed before it are still yielded (with a limiter, also one whose
    /// lease was still going back ...)". Here the deadline also cancels another call, whose end (its lease back at once)
    /// is taken first.
    /// </summary>
    [Fact]
    public async Task AsCompleted_AValueBeforeTheDeadline_WhoseLeaseIsGoingBack_IsYielded_AlsoWhenCancelledWorkEndsFirst()
    {
        var time = new CountingTimeProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var slowLease = new TestLease(() => new ValueTask(release.Task));
        var quickLease = new TestLease(() => default);
        var limiter = new ScriptedLimiter((n, _) => new ValueTask<RateLimitLease>(n == 0 ? slowLease : quickLease));
        var secondStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var work = new Func<CancellationToken, Task<int>>[]
        {
            _ => Task.FromResult(42),
            ct =>
            {
                var pending = new TaskCompletionSource<int>(); // synchronous continuations: cancelled inline by the deadline
                ct.Register(() => pending.TrySetCanceled(ct));
                secondStarted.TrySetResult();
                return pending.Task;
            },
        };
        var seen = new List<int>();
        async Task ConsumeAsync()
        {
            await foreach (int x in AsyncIter.AsCompleted(work, null, limiter, TimeSpan.FromSeconds(10), time))
            {
                seen.Add(x);
            }
        }

        Task all = ConsumeAsync();
        await Task.WhenAll(slowLease.ReleaseStarted.Task, secondStarted.Task).WaitAsync(TestWork.Bound); // 42 returned; its lease is going back
        TestWork.CompleteInline(() => time.Advance(TimeSpan.FromSeconds(11))); // the deadline cancels the second call, whose lease goes back at once (inline)
        await quickLease.ReleaseStarted.Task.WaitAsync(TestWork.Bound);
        release.SetResult();

        await FluentActions.Awaiting(() => all.WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>();
        seen.Should().Equal([42], "a result that completed before the deadline, its lease still going back, is still yielded");
        slowLease.Releases.Should().Be(1);
        quickLease.Releases.Should().Be(1);
    }

    /// <summary>
    /// docs/asynciter.md: "A lease whose release fails | After the call succeeded: a failure of the limiter, as when it
    /// throws" and "GatherAsync reports work that fails after the caller's token has cancelled it as that
    /// OperationCanceledException": a limiter that fails after the caller cancelled, at an acquire or at the release of a
    /// lease whose call succeeded, is reported as the cancellation.
    /// </summary>
    [Theory]
    [InlineData(LimitedOperator.GatherAsync, true)]
    [InlineData(LimitedOperator.GatherSettledAsync, true)]
    [InlineData(LimitedOperator.GatherAsync, false)]
    [InlineData(LimitedOperator.GatherSettledAsync, false)]
    public async Task ALimiterFailingAfterTheCallerCancelled_IsReportedAsTheCancellation(LimitedOperator op, bool atRelease)
    {
        (RateLimiter limiter, Task reached, Action fail) = LimiterThatFailsLater(atRelease);
        using var cts = new CancellationTokenSource();

        Task<List<int>> run = RunAsync(op, 1, (i, _) => Task.FromResult(i), maxConcurrency: 1, limiter, cancellationToken: cts.Token);
        await reached.WaitAsync(TestWork.Bound);
        cts.Cancel();
        fail(); // the limiter fails after the cancellation

        await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    /// <summary>
    /// AsCompleted's form of the test above: a limiter that fails after the deadline cancelled the work, at an acquire or
    /// at the release of a lease whose call succeeded, is the TimeoutException ("work failing after the deadline
    /// cancelled it is the TimeoutException").
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AsCompleted_ALimiterFailingAfterTheDeadline_IsTheTimeout(bool atRelease)
    {
        var time = new CountingTimeProvider();
        (RateLimiter limiter, Task reached, Action fail) = LimiterThatFailsLater(atRelease);
        var work = new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(42) };
        Task<List<int>> all = AsyncIter.AsCompleted(work, null, limiter, TimeSpan.FromSeconds(10), time).ToListAsync().AsTask();

        await reached.WaitAsync(TestWork.Bound);
        time.Advance(TimeSpan.FromSeconds(11));
        fail(); // the limiter fails after the deadline

        await FluentActions.Awaiting(() => all.WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>();
    }

    /// <summary>
    /// A limiter that fails with <see cref="ReleaseFailedException"/> when <c>Fail</c> is called: <paramref name="atRelease"/>,
    /// at the release of the lease it granted (<c>Reached</c>: the release has started, its call succeeded); otherwise at
    /// its first acquire, which ignores its token (<c>Reached</c>: it was asked).
    /// </summary>
    private static (RateLimiter Limiter, Task Reached, Action Fail) LimiterThatFailsLater(bool atRelease)
    {
        if (atRelease)
        {
            var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var lease = new TestLease(() => new ValueTask(release.Task));
            return (new ScriptedLimiter((_, _) => new ValueTask<RateLimitLease>(lease)), lease.ReleaseStarted.Task,
                () => release.SetException(new ReleaseFailedException()));
        }

        var answer = new TaskCompletionSource<RateLimitLease>(TaskCreationOptions.RunContinuationsAsynchronously);
        var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var limiter = new ScriptedLimiter((_, _) =>
        {
            asked.TrySetResult();
            return new ValueTask<RateLimitLease>(answer.Task);
        });
        return (limiter, asked.Task, () => answer.SetException(new ReleaseFailedException()));
    }

    /// <summary>
    /// A refusal that came before AsCompleted's deadline, its refused lease still going back (DisposeAsync, awaited) as the
    /// deadline passes, is a failure that came before the deadline: "throws a failure that came before it as is"
    /// (docs/asynciter.md, Limiters, "A lease that is IAsyncDisposable"), the refusal's InvalidOperationException.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(null)]
    public async Task AsCompleted_ARefusalBeforeTheDeadline_ItsLeaseGoingBackAfterIt_IsThrownAsIs(bool? grants)
    {
        var time = new CountingTimeProvider();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var lease = new TestLease(() => new ValueTask(release.Task)) { Grants = grants };
        var limiter = new ScriptedLimiter((_, _) => new ValueTask<RateLimitLease>(lease));
        var work = new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(42) };
        Task<List<int>> all = AsyncIter.AsCompleted(work, null, limiter, TimeSpan.FromSeconds(10), time).ToListAsync().AsTask();

        await lease.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // refused (or cannot tell) before the deadline; going back
        time.Advance(TimeSpan.FromSeconds(11));
        release.SetResult();

        if (grants is null)
        {
            await FluentActions.Awaiting(() => all.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidDataException>("the limiter failed before the deadline");
        }
        else
        {
            await FluentActions.Awaiting(() => all.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>("the refusal came before the deadline")
                .WithMessage("*refused*");
        }
    }

    /// <summary>
    /// GatherAsync's form: "a failure that came before [the caller's cancellation] as itself, even when it is taken only
    /// after the cancellation" (docs/asynciter.md, Bounded-concurrency execution): a refusal before the cancellation,
    /// its refused lease going back across it.
    /// </summary>
    [Fact]
    public async Task GatherAsync_ARefusalBeforeTheCancellation_ItsLeaseGoingBackAfterIt_IsThrownAsIs()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var lease = new TestLease(() => new ValueTask(release.Task)) { Grants = false };
        var limiter = new ScriptedLimiter((_, _) => new ValueTask<RateLimitLease>(lease));
        using var cts = new CancellationTokenSource();
        Task<List<int>> run = RunAsync(LimitedOperator.GatherAsync, 1, (i, _) => Task.FromResult(i), maxConcurrency: 1, limiter, cancellationToken: cts.Token);

        await lease.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // refused before the cancellation; going back
        cts.Cancel();
        release.SetResult();

        await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>("the refusal came before the cancellation")
            .WithMessage("*refused*");
    }

    /// <summary>
    /// "Failures stop the work. After a failure ... nothing new starts" and "Granted after the operator was cancelled or
    /// failed | Disposed at once; the call does not start (also while a failed call waits to be taken: a failing call
    /// marks the operator failed before its lease goes back)" (docs/asynciter.md): a refusal too, whose refused lease is
    /// going back (DisposeAsync, awaited) while another call's lease is granted.
    /// </summary>
    [Theory]
    [InlineData(LimitedOperator.GatherAsync, false)]
    [InlineData(LimitedOperator.GatherSettledAsync, false)]
    [InlineData(LimitedOperator.Map, false)]
    [InlineData(LimitedOperator.MapUnordered, false)]
    [InlineData(LimitedOperator.AsCompleted, false)]
    [InlineData(LimitedOperator.GatherAsync, null)]
    public async Task ALeaseGrantedWhileARefusedLeaseGoesBack_StartsNoCall(LimitedOperator op, bool? grants)
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var refused = new TestLease(() => new ValueTask(release.Task)) { Grants = grants };
        var second = new TaskCompletionSource<RateLimitLease>(TaskCreationOptions.RunContinuationsAsynchronously);
        var granted = new TestLease(() => default);
        var limiter = new ScriptedLimiter((n, _) => n == 0 ? new ValueTask<RateLimitLease>(refused) : new ValueTask<RateLimitLease>(second.Task));
        int ran = 0;

        Task<List<int>> run = RunAsync(op, 2, (i, _) => { Interlocked.Increment(ref ran); return Task.FromResult(i); }, maxConcurrency: 2, limiter);
        await Task.WhenAll(refused.ReleaseStarted.Task, limiter.SecondRequest.Task).WaitAsync(TestWork.Bound); // refused; going back
        second.SetResult(granted);                                // granted after the refusal
        await granted.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // its call ran (or not) and its lease went back
        release.SetResult();

        await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<Exception>();
        ran.Should().Be(0, "nothing starts after the limiter refused a lease");
        granted.Releases.Should().Be(1);
    }

    /// <summary>
    /// "After a failure nothing new starts", for a failure of the inputs too: a lease granted after a null element was
    /// read starts nothing, also while the consumer is busy with an earlier result and has not taken the failure yet.
    /// </summary>
    [Fact]
    public async Task ALeaseGrantedAfterANullElementWasRead_StartsNothing_WhileTheConsumerHasNotTakenTheFailure()
    {
        var grantLease1 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var limiter = new CountingLimiter { Gate = (n, _) => n == 1 ? grantLease1.Task : Task.CompletedTask };
        var work = new PiecesThenANull(2);
        work.Pieces[0].SetResult(0);
        work.Pieces[1].SetResult(1); // would end at once, if it started

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work.Work(), 3, limiter).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);
        await work.NullRead.Task.WaitAsync(TestWork.Bound);

        grantLease1.SetResult(); // while the consumer is busy with 0
        SpinWait.SpinUntil(() => limiter.Granted == 2 && limiter.Held == 0, TestWork.Bound).Should().BeTrue("the late lease goes back at once");

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<ArgumentNullException>();
        work.LastStarted.Task.IsCompleted.Should().BeFalse("no call starts after the inputs failed");
        limiter.ShouldHaveReturnedEveryLease();
    }

    /// <summary>
    /// A call that ended before a failure of the inputs was read comes before it, also while its lease is still going back
    /// (an <see cref="IAsyncDisposable"/> lease, as a <c>PostgresSemaphore</c>'s): AsCompleted yields its value first,
    /// and GatherAsync throws its failure, not the input failure read after it.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ACallThatEndedBeforeANullElementWasRead_ComesFirst_WhileItsLeaseGoesBack(bool gather)
    {
        var firstRelease = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int releases = 0;
        using var limiter = new CountingLimiter { AsyncRelease = () => Interlocked.Increment(ref releases) == 1 ? firstRelease.Task : Task.CompletedTask };
        var work = new PiecesThenANull(2);
        (TaskCompletionSource<int> piece0, TaskCompletionSource<int> piece1) = (work.Pieces[0], work.Pieces[1]);
        Task piece1Started = work.LastStarted.Task, nullRead = work.NullRead.Task;

        if (gather)
        {
            Task<int[]> gathered = AsyncIter.GatherAsync(work.Work(), 2, limiter);
            await piece1Started.WaitAsync(TestWork.Bound);
            piece0.SetException(new FormatException("piece 0, first"));
            await limiter.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // piece 0 failed; its lease is going back
            piece1.SetResult(1);
            await nullRead.WaitAsync(TestWork.Bound);
            firstRelease.SetResult();
            await FluentActions.Awaiting(() => gathered.WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>("piece 0 failed before the null element was read");
        }
        else
        {
            var seen = new List<int>();
            await using (IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work.Work(), 2, limiter).GetAsyncEnumerator())
            {
                ValueTask<bool> first = e.MoveNextAsync();
                await piece1Started.WaitAsync(TestWork.Bound);
                piece0.SetResult(0);
                await limiter.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // piece 0 returned 0; its lease is going back
                piece1.SetResult(1);
                (await first.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
                seen.Add(e.Current);
                await nullRead.WaitAsync(TestWork.Bound);
                firstRelease.SetResult();
                await FluentActions.Awaiting(async () =>
                {
                    while (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound))
                    {
                        seen.Add(e.Current);
                    }
                }).Should().ThrowAsync<ArgumentNullException>().WithParameterName("work");
            }

            seen.Should().Equal([1, 0], "0 came before the null element was read (only its lease was still going back)");
        }

        limiter.ShouldHaveReturnedEveryLease();
    }

    /// <summary>
    /// Call A ended before the null element was read (its lease still going back); call B ended only after it was read:
    /// the failure comes after A and before B, however their leases' releases interleave. AsCompleted never yields B's
    /// value; GatherAsync throws the input failure, not B's ("the first failure wins"). With <paramref name="bBackFirst"/>,
    /// B's lease is back (and B posted, while the failure is still held for A) before A's.
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public async Task ACallThatEndedAfterANullElementWasRead_DoesNotOvertakeIt_WhileAnEarlierLeaseGoesBack(bool gather, bool bBackFirst)
    {
        // On a single-threaded context the consumer's step that reads the null element (and posts its failure) runs to its
        // end before this body's next step, which the null element's read released: B then ends after the failure is
        // posted, not merely after the element was read.
        using var context = new ContextPolicyTests.SingleThreadedContext();
        await context.Run(async () =>
        {
            var firstRelease = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            // Completed on the test's step, B's lease goes back and B is posted inside SetResult (the queue's bookkeeping
            // awaits it with ConfigureAwait(false)): done before the test's next step.
            var thirdRelease = new TaskCompletionSource();
            var thirdReleaseStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            int releases = 0;
            using var limiter = new CountingLimiter
            {
                AsyncRelease = () => Interlocked.Increment(ref releases) switch
                {
                    1 => firstRelease.Task,
                    3 => Signal(thirdReleaseStarted, thirdRelease.Task),
                    _ => Task.CompletedTask,
                },
            };
            var work = new PiecesThenANull(3);
            (TaskCompletionSource<int> c, TaskCompletionSource<int> a, TaskCompletionSource<int> b) = (work.Pieces[0], work.Pieces[1], work.Pieces[2]);
            Task bStarted = work.LastStarted.Task, nullRead = work.NullRead.Task;

            if (gather)
            {
                Task<int[]> gathered = AsyncIter.GatherAsync(work.Work(), 3, limiter);
                await bStarted.WaitAsync(TestWork.Bound);
                a.SetResult(1);
                await limiter.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // A ended; its lease is going back
                c.SetResult(0);
                await nullRead.WaitAsync(TestWork.Bound); // the null element is read (after C was taken)
                b.SetException(new FormatException("B, failed after the null element was read"));
                await thirdReleaseStarted.Task.WaitAsync(TestWork.Bound);
                ReleaseLeases(firstRelease, thirdRelease, bBackFirst);
                await FluentActions.Awaiting(() => gathered.WaitAsync(TestWork.Bound)).Should()
                    .ThrowAsync<ArgumentNullException>("the null element was read before B failed: the first failure wins");
            }
            else
            {
                var seen = new List<int>();
                await using (IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work.Work(), 3, limiter).GetAsyncEnumerator())
                {
                    ValueTask<bool> first = e.MoveNextAsync();
                    await bStarted.WaitAsync(TestWork.Bound);
                    a.SetResult(1);
                    await limiter.ReleaseStarted.Task.WaitAsync(TestWork.Bound); // A ended; its lease is going back
                    c.SetResult(0);
                    (await first.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
                    seen.Add(e.Current);
                    ValueTask<bool> next = e.MoveNextAsync();
                    await nullRead.WaitAsync(TestWork.Bound);
                    b.SetResult(2); // B ends after the null element was read
                    await thirdReleaseStarted.Task.WaitAsync(TestWork.Bound);
                    ReleaseLeases(firstRelease, thirdRelease, bBackFirst);
                    await FluentActions.Awaiting(async () =>
                    {
                        bool more = await next.AsTask().WaitAsync(TestWork.Bound);
                        while (more)
                        {
                            seen.Add(e.Current);
                            more = await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound);
                        }
                    }).Should().ThrowAsync<ArgumentNullException>().WithParameterName("work");
                }

                seen.Should().Equal([0, 1], "B ended after the null element was read, so it comes after the failure (never yielded)");
            }

            limiter.ShouldHaveReturnedEveryLease();
            return true;
        }).WaitAsync(TestWork.Bound);

        static Task Signal(TaskCompletionSource started, Task then)
        {
            started.TrySetResult();
            return then;
        }

        static void ReleaseLeases(TaskCompletionSource a, TaskCompletionSource b, bool bFirst)
        {
            (bFirst ? b : a).SetResult();
            (bFirst ? a : b).SetResult();
        }
    }

    /// <summary>
    /// Calls ending on pool threads while their leases go back asynchronously race the consumer reading a null element:
    /// every run ends (never waits forever for a held failure), with the failure it must have, nothing yielded twice, and
    /// every lease returned.
    /// </summary>
    [Theory]
    [InlineData("AsCompleted")]
    [InlineData("GatherSettledAsync")]
    [InlineData("GatherAsync")]
    public async Task ANullElementRacingCallsWhoseLeasesGoBackAsynchronously_EndsEveryTime_NothingLostOrDuplicated(string op)
    {
        for (int run = 0; run < 200; run++)
        {
            using var limiter = new CountingLimiter { AsyncRelease = () => Task.Run(() => { }) };
            int n = 3 + (run % 7);
            IEnumerable<Func<CancellationToken, Task<int>>> Work()
            {
                for (int i = 0; i < n; i++)
                {
                    int value = i;
                    yield return async _ =>
                    {
                        await Task.Yield();
                        return op == "GatherAsync" && value == n - 1 ? throw new FormatException("the last piece") : value;
                    };
                }

                yield return null!;
            }

            if (op == "AsCompleted")
            {
                var seen = new List<int>();
                await FluentActions.Awaiting(async () =>
                {
                    await foreach (int x in AsyncIter.AsCompleted(Work(), 3, limiter))
                    {
                        seen.Add(x);
                    }
                }).Should().ThrowAsync<ArgumentNullException>().WithParameterName("work").WaitAsync(TestWork.Bound);
                seen.Should().OnlyHaveUniqueItems().And.OnlyContain(x => x >= 0 && x < n);
            }
            else if (op == "GatherSettledAsync")
            {
                await FluentActions.Awaiting(() => AsyncIter.GatherSettledAsync(Work(), 3, limiter))
                    .Should().ThrowAsync<ArgumentNullException>().WithParameterName("work").WaitAsync(TestWork.Bound);
            }
            else
            {
                // The last piece fails before or after the null element is read: either is the first failure.
                Exception thrown = (await FluentActions.Awaiting(() => AsyncIter.GatherAsync(Work(), 3, limiter))
                    .Should().ThrowAsync<Exception>().WaitAsync(TestWork.Bound)).Which;
                thrown.Should().Match(e => e is FormatException || e is ArgumentNullException);
            }

            limiter.ShouldHaveReturnedEveryLease();
        }
    }

    /// <summary>Work of <c>count</c> pieces, each completing when its <see cref="Pieces"/> source does, then a null element:
    /// <see cref="LastStarted"/> completes when the last piece's factory runs, <see cref="NullRead"/> when the null is read.</summary>
    private sealed class PiecesThenANull(int count)
    {
        public TaskCompletionSource<int>[] Pieces { get; } =
            [.. Enumerable.Range(0, count).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously))];

        public TaskCompletionSource LastStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource NullRead { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public IEnumerable<Func<CancellationToken, Task<int>>> Work()
        {
            for (int i = 0; i < Pieces.Length; i++)
            {
                TaskCompletionSource<int> piece = Pieces[i];
                bool last = i == Pieces.Length - 1;
                yield return _ =>
                {
                    if (last)
                    {
                        LastStarted.SetResult();
                    }

                    return piece.Task;
                };
            }

            NullRead.SetResult();
            yield return null!;
        }
    }
}
