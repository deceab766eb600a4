using System.Threading.RateLimiting;
using AsyncIterTools;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

public sealed class PostgresSemaphoreTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task DifferentMaxima_AnOwnCallChecksItsOwn_AReleaseHandsOverUnderTheReleasersMaximum()
    {
        // While a changed maximum rolls out (the documented rule): a process's own call is checked against its own
        // maximum, a hand-over by a release against the releaser's.
        Member wide = await JoinAsync();
        Member narrow = await JoinAsync();
        PostgresSemaphore three = wide.Coordinator.CreateSemaphore("rolling", 3);
        PostgresSemaphore one = narrow.Coordinator.CreateSemaphore("rolling", 1);
        PostgresLease first = await three.AcquireAsync(Bound);
        (await one.TryAcquireAsync()).Should().BeNull("the narrow process's own call checks its own maximum, 1, and one is held");
        PostgresLease second = await three.AcquireAsync(Bound);
        PostgresLease third = await three.AcquireAsync(Bound);
        Task<PostgresLease> waiting = one.AcquireAsync(Bound).AsTask();
        await WaitersAsync(1);

        await first.ReleaseAsync();
        PostgresLease handed = await waiting.WaitAsync(Bound);
        (await three.GetCurrentCountAsync()).Should().Be(0, "the release handed its permit over under its own maximum, 3, though two were held");

        await handed.ReleaseAsync();
        await second.ReleaseAsync();
        await third.ReleaseAsync();
    }

    [PostgresFact]
    public async Task AGrantToAWaitThatLeftInTheSameInstant_IsNotKeptInTheProcess()
    {
        // A release in this process grants the permit to a wait of this process whose cancellation has just left the
        // line (its call to leave it on the server comes next): the grant finds no place to hand itself to. Played with
        // the set's turn held by a transaction here, so that both calls wait at the server, the release first.
        var time = new CountingTimeProvider();
        Member member = await JoinAsync(o => o.TimeProvider = time);
        PostgresSemaphore semaphore = member.Coordinator.CreateSemaphore("handed", 1);
        PostgresLease held = await semaphore.AcquireAsync(Bound);
        using var cancel = new CancellationTokenSource();
        Task<PostgresLease> leaving = semaphore.AcquireAsync(cancel.Token).AsTask();
        await WaitersAsync(1);

        await using (Npgsql.NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (Npgsql.NpgsqlTransaction turn = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(turn, "SELECT @schema.permit_turn('s', 'handed')");
            Task release = held.ReleaseAsync().AsTask();
            await WaitsForALockAsync(member, "the release waits for the turn");
            cancel.Cancel();
            await WaitsForALockAsync(member, "the cancelled wait has left its place here and waits to leave it there", count: 2);
            await turn.CommitAsync();
            await release.WaitAsync(Bound);
        }

        await FluentActions.Awaiting(() => leaving.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        (await PermitRowsAsync()).Should().Be((0L, 0L), "the wait that left gave back the permit granted to its place");

        semaphore.Set.GrantsWithoutAPlace.Should().Be(1, "the release handed its grant over here, and no wait took it");

        // The grant it was handed in the process is dropped once older than a lease, at the next release here (a wait
        // that had not yet recorded its place, still to come, would find its permit on the server all the same).
        time.Advance(member.Coordinator.LeaseDuration + TimeSpan.FromSeconds(1));
        await (await semaphore.AcquireAsync(Bound)).DisposeAsync();
        semaphore.Set.GrantsWithoutAPlace.Should().Be(0);
    }

    [PostgresFact]
    public async Task ManyTasks_OnTwoCoordinators_NeverHoldMoreThanMaxCount_AndEveryAcquireIsServed()
    {
        const int MaxCount = 3;
        const int Tasks = 8;
        const int Rounds = 15;
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        int inside = 0;
        int peak = 0;
        int served = 0;

        // Holders keep their permit until all MaxCount permits have been held at once (then nobody waits for that
        // again): a semaphore that handed out fewer at a time would time out here rather than pass by luck.
        var allHeld = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        async Task WorkAsync(PostgresSemaphore semaphore)
        {
            for (int i = 0; i < Rounds; i++)
            {
                await using PostgresLease lease = await semaphore.AcquireAsync();
                int now = Interlocked.Increment(ref inside);
                Peak.Raise(ref peak, now);
                if (now == MaxCount)
                {
                    allHeld.TrySetResult();
                }

                await allHeld.Task;
                await Task.Yield();
                Interlocked.Decrement(ref inside);
                Interlocked.Increment(ref served);
            }
        }

        await Task.WhenAll(Enumerable.Range(0, Tasks).Select(i =>
            Task.Run(() => WorkAsync((i % 2 == 0 ? a : b).Coordinator.CreateSemaphore("api", MaxCount))))).WaitAsync(TimeSpan.FromSeconds(60));

        peak.Should().Be(MaxCount, "never more than MaxCount holders, and all MaxCount at once while others wait");
        served.Should().Be(Tasks * Rounds);
        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }

    [PostgresFact]
    public async Task ManyTasks_CancellingWaitsThatRaceHandOvers_NeverExceedMaxCount_LoseNoPermit_AndLeaveNothing()
    {
        // A release hands its permit to the first waiter in line; here waits are cancelled (by their token, or by a
        // short timeout) at any moment, also just as a release grants them their permit: the permit must then go
        // on to the next waiter, not stay with the wait that left.
        const int MaxCount = 2;
        const int Tasks = 8;
        const int Rounds = 12;
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        int inside = 0;
        int peak = 0;
        int served = 0;
        int gaveUp = 0;

        async Task WorkAsync(PostgresSemaphore semaphore, int seed)
        {
            var random = new Random(seed);
            for (int i = 0; i < Rounds; i++)
            {
                using var cancel = new CancellationTokenSource();
                ValueTask<PostgresLease> acquiring = random.Next(3) switch
                {
                    0 => semaphore.AcquireAsync(TimeSpan.FromMilliseconds(random.Next(1, 30)), cancel.Token),
                    _ => semaphore.AcquireAsync(cancel.Token),
                };
                if (random.Next(3) == 0)
                {
                    cancel.CancelAfter(random.Next(0, 20));
                }

                PostgresLease lease;
                try
                {
                    lease = await acquiring;
                }
                catch (Exception e) when (e is OperationCanceledException or TimeoutException)
                {
                    Interlocked.Increment(ref gaveUp);
                    continue;
                }

                await using (lease)
                {
                    int now = Interlocked.Increment(ref inside);
                    Peak.Raise(ref peak, now);
                    // The work done under the permit, 0 to 2 ms: part of the scenario, not a wait for anything. It
                    // spreads the releases, and so the hand-offs, over the same real-time span as the waits' timeouts
                    // and CancelAfter above, so that they race.
                    await Task.Delay(random.Next(0, 3));
                    Interlocked.Decrement(ref inside);
                    Interlocked.Increment(ref served);
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, Tasks).Select(i =>
            Task.Run(() => WorkAsync((i % 2 == 0 ? a : b).Coordinator.CreateSemaphore("api", MaxCount), i)))).WaitAsync(TimeSpan.FromSeconds(90));

        peak.Should().BeLessThanOrEqualTo(MaxCount);
        (served + gaveUp).Should().Be(Tasks * Rounds, "every acquire either got a permit or gave up");
        served.Should().BeGreaterThan(0);
        (await PermitRowsAsync()).Should().Be((0L, 0L), "no permit or place stays with a wait that left");
        (await a.Coordinator.CreateSemaphore("api", MaxCount).GetCurrentCountAsync()).Should().Be(MaxCount);
    }

    [PostgresFact]
    public async Task AcquireAsync_WhenFull_WaitsInFifoOrder()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresSemaphore semA = a.Coordinator.CreateSemaphore("api", 2);
        PostgresSemaphore semB = b.Coordinator.CreateSemaphore("api", 2);
        PostgresLease first = await semA.AcquireAsync();
        PostgresLease second = await semB.AcquireAsync();

        Task<PostgresLease> w1 = semB.AcquireAsync().AsTask();
        await WaitersAsync(1);
        Task<PostgresLease> w2 = semA.AcquireAsync().AsTask();
        await WaitersAsync(2);
        (await semA.TryAcquireAsync()).Should().BeNull("others wait");

        await first.ReleaseAsync();
        await using PostgresLease got1 = await w1.WaitAsync(Bound);
        w2.IsCompleted.Should().BeFalse("one permit was freed, and the first in line took it");
        await second.ReleaseAsync();
        await using PostgresLease got2 = await w2.WaitAsync(Bound);
        got2.FencingToken.Should().BeGreaterThan(got1.FencingToken);
    }

    [PostgresFact]
    public async Task GetCurrentCountAsync_CountsFreePermitsAcrossCoordinators()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresSemaphore semA = a.Coordinator.CreateSemaphore("api", 3);
        PostgresSemaphore semB = b.Coordinator.CreateSemaphore("api", 3);
        (await semA.GetCurrentCountAsync()).Should().Be(3);

        await using PostgresLease one = await semA.AcquireAsync();
        await using PostgresLease two = await semB.AcquireAsync();
        (await semB.GetCurrentCountAsync()).Should().Be(1);
        semA.MaxCount.Should().Be(3);
        semA.ToString().Should().Be("PostgresSemaphore(name=api, max=3)");
    }

    [PostgresFact]
    public async Task AsRateLimiter_Disposed_EndsItsWaits_WithALeaseNotAcquired_AsTheBclLimitersDo()
    {
        // The BCL's behaviour, for comparison: a queued request of a disposed ConcurrencyLimiter gets a failed lease.
        using (var bcl = new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 1, QueueLimit = 1 }))
        {
            using RateLimitLease taken = bcl.AttemptAcquire();
            ValueTask<RateLimitLease> queued = bcl.AcquireAsync();
            bcl.Dispose();
            (await queued).IsAcquired.Should().BeFalse();
        }

        Member a = await JoinAsync();
        PostgresSemaphore semaphore = a.Coordinator.CreateSemaphore("api", 1);
        await using PostgresLease held = await semaphore.AcquireAsync(Bound);
        RateLimiter limiter = semaphore.AsRateLimiter();
        Task<RateLimitLease> waiting = limiter.AcquireAsync().AsTask();
        await WaitersAsync(1);

        limiter.Dispose();

        using RateLimitLease lease = await waiting.WaitAsync(Bound);
        lease.IsAcquired.Should().BeFalse();
        lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason).Should().BeTrue();
        reason.Should().Contain("disposed");
        (await PermitRowsAsync()).Should().Be((1L, 0L), "the wait left the line; the permit held stays held");
        await FluentActions.Awaiting(async () => await limiter.AcquireAsync()).Should().ThrowAsync<ObjectDisposedException>();
    }

    [PostgresFact]
    public async Task AsRateLimiter_LeasesArePermits_DisposingReleases()
    {
        Member a = await JoinAsync();
        PostgresSemaphore semaphore = a.Coordinator.CreateSemaphore("api", 2);
        using RateLimiter limiter = semaphore.AsRateLimiter();

        using (RateLimitLease first = await limiter.AcquireAsync())
        using (RateLimitLease second = await limiter.AcquireAsync())
        {
            first.IsAcquired.Should().BeTrue();
            second.IsAcquired.Should().BeTrue();
            (await semaphore.GetCurrentCountAsync()).Should().Be(0);
            using RateLimitLease none = await limiter.AcquireAsync(permitCount: 0);
            none.IsAcquired.Should().BeFalse("no permit is free");
        }

        await EventuallyAsync(async () => await semaphore.GetCurrentCountAsync() == 2, "the disposed leases are released");
        using RateLimitLease free = await limiter.AcquireAsync(permitCount: 0);
        free.IsAcquired.Should().BeTrue();
    }

    [PostgresFact]
    public async Task AsRateLimiter_AnAcquiredLease_CarriesItsLostTokenAndFencingToken()
    {
        Member a = await JoinAsync();
        using RateLimiter limiter = a.Coordinator.CreateSemaphore("api", 1).AsRateLimiter();
        using RateLimitLease lease = await limiter.AcquireAsync();

        lease.MetadataNames.Should().BeEquivalentTo(["LEASE_LOST", "FENCING_TOKEN"]);
        lease.TryGetMetadata(PostgresSemaphore.LeaseLostMetadata, out CancellationToken lost).Should().BeTrue();
        lease.TryGetMetadata(PostgresSemaphore.FencingTokenMetadata, out long fencingToken).Should().BeTrue();
        fencingToken.Should().BePositive();
        lost.IsCancellationRequested.Should().BeFalse();

        (await TerminateAsync(a)).Should().BePositive(); // the session ends: the permit is lost
        await WaitForLostAsync(lost);
    }

    /// <summary>
    /// A lease of the limiter lost while an operator's call runs under it (the session ended: the server freed the
    /// permit, and another process may take it at once): the call is told through its token, and fails as the loss.
    /// </summary>
    [PostgresFact]
    public async Task AsRateLimiter_ALeaseLostWhileAnOperatorsCallRuns_CancelsTheCall_AndTheOperatorFailsSayingSo()
    {
        Member a = await JoinAsync();
        using RateLimiter limiter = a.Coordinator.CreateSemaphore("api", 1).AsRateLimiter();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        Task<List<int>> run = AsyncEnumerable.Range(0, 1)
            .MapUnordered(
                async (id, ct) =>
                {
                    started.TrySetResult();
                    await new TaskCompletionSource().Task.WaitAsync(ct); // runs until its token is cancelled
                    return id;
                },
                1,
                limiter)
            .ToListAsync().AsTask();
        await started.Task.WaitAsync(Bound);

        (await TerminateAsync(a)).Should().BePositive();

        (await FluentActions.Awaiting(() => run.WaitAsync(Bound)).Should().ThrowAsync<InvalidOperationException>())
            .WithMessage("The lease of the rate limiter * was lost while the call ran*");
    }

    /// <summary>"The operator never holds more leases than it has calls running, and none once it has ended" holds at
    /// the server: the operator ends only once its last permit's release has gone through (here held up at the server).</summary>
    [PostgresFact]
    public async Task AsRateLimiter_OnceAnOperatorHasEnded_TheServerNoLongerCountsItsPermits()
    {
        Member a = await JoinAsync();
        PostgresSemaphore semaphore = a.Coordinator.CreateSemaphore("api", 1);
        using RateLimiter limiter = semaphore.AsRateLimiter();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        Task<List<int>> run = AsyncEnumerable.Range(0, 1)
            .MapUnordered(
                async (id, ct) =>
                {
                    started.TrySetResult();
                    await finish.Task.WaitAsync(ct);
                    return id;
                },
                1,
                limiter)
            .ToListAsync().AsTask();
        await started.Task.WaitAsync(Bound);

        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction turn = await connection.BeginTransactionAsync())
        {
            await ExecuteAsync(turn, "SELECT @schema.permit_turn('s', 'api')");
            finish.SetResult();
            await WaitsForALockAsync(a, "the lease's release waits for the set's turn");
            run.IsCompleted.Should().BeFalse("the operator ends only once its permit is back");
            await turn.CommitAsync();
        }

        (await run.WaitAsync(Bound)).Should().Equal(0);
        (await semaphore.GetCurrentCountAsync()).Should().Be(1, "the operator has ended: it holds no permit");
        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }

    [PostgresFact]
    public async Task AsRateLimiter_AttemptAcquire_IsNeverAcquired_AndSaysWhy()
    {
        Member a = await JoinAsync();
        using RateLimiter limiter = a.Coordinator.CreateSemaphore("api", 2).AsRateLimiter();

        using RateLimitLease lease = limiter.AttemptAcquire();
        lease.IsAcquired.Should().BeFalse();
        lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason).Should().BeTrue();
        reason.Should().Contain("AcquireAsync");
        FluentActions.Invoking(() => limiter.AttemptAcquire(2)).Should().Throw<ArgumentOutOfRangeException>();
        FluentActions.Invoking(() => limiter.AcquireAsync(2)).Should().Throw<ArgumentOutOfRangeException>("at the call, as the BCL limiters check");
        limiter.GetStatistics().Should().BeNull();
    }

    [PostgresFact]
    public async Task AsRateLimiter_AfterDispose_Throws()
    {
        Member a = await JoinAsync();
        RateLimiter limiter = a.Coordinator.CreateSemaphore("api", 2).AsRateLimiter();
        limiter.Dispose();
        await FluentActions.Awaiting(async () => await limiter.AcquireAsync()).Should().ThrowAsync<ObjectDisposedException>();
    }

    public static TheoryData<string> CancelledWaits => new() { "semaphore", "lock", "rate limiter", "queue get" };

    /// <summary>A wait cancelled while it sleeps in line throws with the caller's token (as the BCL's waits and
    /// limiters do), so that <c>catch (OperationCanceledException e) when (e.CancellationToken == ct)</c> matches.</summary>
    [PostgresTheory, MemberData(nameof(CancelledWaits))]
    public async Task AWaitCancelledInLine_ThrowsWithTheCallersToken(string kind)
    {
        Member member = await JoinAsync();
        await using PostgresLease held = kind == "lock"
            ? await member.Coordinator.CreateLock("busy").AcquireAsync(Bound)
            : await member.Coordinator.CreateSemaphore("busy", 1).AcquireAsync(Bound);
        using RateLimiter limiter = member.Coordinator.CreateSemaphore("busy", 1).AsRateLimiter();
        using var cts = new CancellationTokenSource();
        Task waiting = kind switch
        {
            "semaphore" => member.Coordinator.CreateSemaphore("busy", 1).AcquireAsync(cts.Token).AsTask(),
            "lock" => member.Coordinator.CreateLock("busy").AcquireAsync(cts.Token).AsTask(),
            "rate limiter" => limiter.AcquireAsync(1, cts.Token).AsTask(),
            "queue get" => member.Coordinator.CreateQueue<int>("empty").GetAsync(cts.Token).AsTask(),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        if (kind == "queue get")
        {
            await EventuallyAsync(() => Task.FromResult(member.Coordinator.Signals.Count == 1), "the get sleeps");
        }
        else
        {
            await WaitersAsync(1);
        }

        await cts.CancelAsync();

        (await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);
    }
}
