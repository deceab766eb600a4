using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A permit that nothing in its process counts on any more must be free for the others, and the next waiter woken
/// (scale-out.md: "Waits are woken within milliseconds, from any process"; PollInterval is only "the backstop for a
/// wake-up notification that was missed"), not left to that waiter's next poll or to the permit's expiry:
/// <list type="bullet">
/// <item>A release in one process hands the permit it frees to the first waiter in line, in another process, which is
/// woken and claims it with its next call. When that process's session ends before the claim (its coordinator is
/// disposed, or its LISTEN connection stops answering), the server frees the permit granted to it with the rest of the
/// session; the next waiter in line, in a third process, must then be woken, as it is when a session ends with a lease
/// held.</item>
/// <item>A lease lost here (its local deadline passed) while its last renewal was held up at the server: once the
/// renewal has run, the server holds the permit for a whole new lease for no one. It is given back, apart from the
/// renewal: the other leases that renewal renewed keep their new deadlines meanwhile.</item>
/// <item>The waits of the process whose session ended, under its next session, are woken too (a coordinator ignores its
/// own notifications).</item>
/// </list>
/// </summary>
public sealed class UnheldPermitTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>Long enough that a test passing within it proves a wake-up came from a notification or a signal, not a poll.</summary>
    private static readonly TimeSpan s_noPolling = TimeSpan.FromHours(1);

    /// <summary>
    /// PostgresCoordinator: "DisposeAsync ends the session: waits in progress throw ObjectDisposedException, leases held
    /// are lost and given back to the server at once"; scale-out.md: "Waits are woken within milliseconds, from any
    /// process", with PollInterval only "the backstop for a wake-up notification that was missed". The disposed
    /// process's wait had been granted the lock by the holder's release (it never heard of it: its LISTEN connection's
    /// replies are held), so the disposal frees that permit on the server; the waiter behind it, in a process that
    /// never polls, must get the lock.
    /// </summary>
    [PostgresFact]
    public async Task DisposingACoordinator_WhoseWaitWasGrantedTheLockButHadNotClaimedIt_WakesTheNextWaiter_WithoutPolling()
    {
        await using GrantedUnheard setup = await GrantTheLockToAWaitThatCannotHearItAsync(o => { });

        Task disposal = setup.Granted.Coordinator.DisposeAsync().AsTask();
        await FluentActions.Awaiting(() => setup.GrantedWait.WaitAsync(Bound)).Should().ThrowAsync<ObjectDisposedException>();
        await FreedAsync(setup.Granted, "the disposal freed the permit granted to its wait");

        await using PostgresLease lease = await setup.NextWait.WaitAsync(Bound); // the next waiter got the lock
        setup.Proxy.ReleaseReplies(setup.ListenPort);
        await disposal.WaitAsync(Bound);
    }

    /// <summary>
    /// The same when the granted process's LISTEN connection stops answering (its ping times out: PostgresCoordinator
    /// "When the LISTEN connection fails ... waits in progress throw PostgresCoordinationException, every lease held by
    /// this process is lost ... and becomes free for the others"). The coordinator frees its session on the server
    /// through another connection, the permit granted to its wait included; the waiter behind it, in a process that
    /// never polls, must get the lock.
    /// </summary>
    [PostgresFact]
    public async Task AListenConnectionThatStopsAnswering_WhileItsWaitWasGrantedTheLock_WakesTheNextWaiter_WithoutPolling()
    {
        await using GrantedUnheard setup = await GrantTheLockToAWaitThatCannotHearItAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(3));

        // The held replies include the next ping's.
        await FluentActions.Awaiting(() => setup.GrantedWait.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        await FreedAsync(setup.Granted, "the ended session freed the permit granted to its wait");

        await using PostgresLease lease = await setup.NextWait.WaitAsync(Bound); // the next waiter got the lock
    }

    /// <summary>
    /// PostgresLease: "It is lost when the coordinator's session ends (...) or when no renewal succeeded for a lease
    /// duration less a margin". Two locks are held; the heartbeat's renewal of both is held up at the server (a
    /// transaction holds the first lock's turn) until the first lease's local deadline passes; then it renews both. The
    /// second lease, taken later, still had time left: the renewal succeeded for it, so it is not lost. But the heartbeat
    /// gives the first lease back (a release, which waits for that lock's turn: a second transaction holds it) before it
    /// moves the second lease's deadline, and the second lease's old deadline passes meanwhile: it is lost though its
    /// renewal succeeded, and its deadline counted from that renewal has not passed.
    /// </summary>
    [PostgresFact]
    public async Task ALeaseTheRenewalRenewed_IsNotLost_WhileTheHeartbeatGivesBackAnotherLeaseLostBeforeTheRenewalAnswered()
    {
        var time = new CountingTimeProvider();
        Member member = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.LeaseDuration = TimeSpan.FromMinutes(1); // a margin of 1 s: each lease's deadline is 59 s after its last renewal was sent
        });
        DateTimeOffset start = time.GetUtcNow();
        PostgresLease first = await member.Coordinator.CreateLock("a").AcquireAsync(Bound);
        time.Advance(TimeSpan.FromSeconds(10));
        PostgresLease second = await member.Coordinator.CreateLock("b").AcquireAsync(Bound); // its deadline: start + 69 s

        await using NpgsqlConnection firstConnection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction firstHold = await firstConnection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(firstHold, "SELECT @schema.permit_turn('l', 'a')");
        await BeatUntilTheRenewalWaitsAsync(member, time, "the heartbeat's renewal of both leases waits for the first lock's turn");
        // The renewal was sent at most a second ago: the second lease's deadline, once it is renewed, is at least 58 s
        // from now.
        DateTimeOffset renewedDeadline = time.GetUtcNow() + TimeSpan.FromSeconds(58);
        await AdvanceUntilLostAsync(time, first.Lost);
        second.Lost.IsCancellationRequested.Should().BeFalse("the second lease's deadline is 10 s after the first's");

        // A second transaction queues for the first lock's turn behind the renewal: it gets it once the renewal has run,
        // and holds up the give-back of the first lease.
        await using NpgsqlConnection secondConnection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction secondHold = await secondConnection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        Task queued = ExecuteAsync(secondHold, "SELECT @schema.permit_turn('l', 'a')");
        await EventuallyAsync(
            async () => await ScalarAsync<long>(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'test-admin' AND wait_event_type = 'Lock'") == 1,
            "the second transaction waits for the turn, behind the renewal");
        await firstHold.CommitAsync();
        await queued.WaitAsync(Bound); // the renewal, ahead of it, has run and committed
        await WaitsForALockAsync(member, "the give-back of the first lease (lost here, renewed by the server) waits for the turn");

        // Past the second lease's old deadline (start + 69 s), before its renewed one.
        DateTimeOffset checkAt = start + TimeSpan.FromSeconds(72);
        checkAt.Should().BeBefore(renewedDeadline);
        while (time.GetUtcNow() < checkAt)
        {
            time.Advance(TimeSpan.FromSeconds(1));
        }

        await secondHold.CommitAsync();
        await EventuallyAsync(
            async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.permit_slots WHERE name = 'a' AND token IS NOT NULL") == 0,
            "the first lease, lost here, was given back");

        second.Lost.IsCancellationRequested.Should().BeFalse(
            "the renewal that answered renewed the second lease, whose deadline counted from it has not passed");
        (await ScalarAsync<long>($"SELECT count(*) FROM @schema.permit_slots WHERE name = 'b' AND token = {second.FencingToken}"))
            .Should().Be(1, "the second lease is still held on the server");
        await second.ReleaseAsync();
    }

    /// <summary>
    /// scale-out.md: "Waits are woken within milliseconds, from any process. | After (...) a session ends here with leases
    /// held or waits in line, once the server has freed them), the coordinator sends a NOTIFY (...); every coordinator
    /// (...) ignores the notifications it sent itself (it has woken its own waits already)"; PollInterval is "the
    /// backstop for a wake-up notification that was missed". A coordinator's wait was granted the lock by a release in
    /// another process, and its LISTEN connection stops answering: the session ends here, and the coordinator frees it
    /// on the server (held up for a moment: a transaction holds the turn of another lock the session holds, which
    /// end_session takes first). Meanwhile a new wait of the same coordinator, under its next session, queues behind
    /// the permit granted to the old session. Once the server frees it, that wait must be woken: its own coordinator
    /// ignores the NOTIFY it sent, so only a local signal can wake it, and it never polls.
    /// </summary>
    [PostgresFact]
    public async Task AListenConnectionThatStopsAnswering_WhileItsWaitWasGrantedTheLock_WakesTheCoordinatorsOwnNextWait_WithoutPolling()
    {
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member granted = await JoinAsync(
            o =>
            {
                o.PollInterval = s_noPolling;
                o.LeaseDuration = TimeSpan.FromSeconds(3); // its LISTEN connection is pinged every second
                o.TimeProvider = new CountingTimeProvider(); // no heartbeat, no poll, no lease deadline: only pings (real time)
            },
            port: proxy.Port);
        Member holder = await JoinAsync();
        _ = await granted.Coordinator.CreateLock("a").AcquireAsync(Bound); // a set ordered before "job"
        PostgresLease held = await holder.Coordinator.CreateLock("job").AcquireAsync(Bound);
        Task<PostgresLease> grantedWait = granted.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1, grantedWait);

        Session session = await granted.Coordinator.GetSessionAsync(CancellationToken.None);
        int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");
        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(hold, "SELECT @schema.permit_turn('l', 'a')");
        proxy.HoldReplies(listenPort); // the notification is not heard, and the next ping gets no answer
        try
        {
            await held.ReleaseAsync();
            (await PermitRowsAsync()).Should().Be((2L, 0L), "the release granted the lock to the waiter in line");

            // The ping timed out: the session ended here, and its end on the server waits for the turn of "a".
            await WaitsForALockAsync(granted, "the coordinator frees its session on the server, after the turn of \"a\"");
            Task<PostgresLease> ownWait = granted.Coordinator.CreateLock("job").AcquireAsync().AsTask();
            await WaitersAsync(1, ownWait); // under a new session, behind the permit still granted to the old one
            await hold.CommitAsync();

            await FluentActions.Awaiting(() => grantedWait.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
            await EventuallyAsync(
                async () => await ScalarAsync<long>($"SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND session = {session.Key}") == 0,
                "the ended session's permits are free on the server");

            await using PostgresLease lease = await ownWait.WaitAsync(Bound); // its own next wait got the lock
        }
        finally
        {
            proxy.ReleaseReplies(listenPort);
        }
    }

    /// <summary>A lock held in one process, granted by its release to a wait in a second one whose LISTEN connection's
    /// replies are held (it never hears of the grant), and a wait behind it in a third; neither waiting process polls.</summary>
    private async Task<GrantedUnheard> GrantTheLockToAWaitThatCannotHearItAsync(Action<PostgresCoordinatorOptions> grantedOptions)
    {
        var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member granted = await JoinAsync(
            o =>
            {
                o.PollInterval = s_noPolling;
                grantedOptions(o);
            },
            port: proxy.Port);
        Member holder = await JoinAsync();
        Member next = await JoinAsync(o => o.PollInterval = s_noPolling);
        PostgresLease held = await holder.Coordinator.CreateLock("job").AcquireAsync(Bound);
        Task<PostgresLease> grantedWait = granted.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1, grantedWait);

        Session session = await granted.Coordinator.GetSessionAsync(CancellationToken.None);
        int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");
        proxy.HoldReplies(listenPort); // the release's notification does not reach the granted wait
        await held.ReleaseAsync();
        (await PermitRowsAsync()).Should().Be((1L, 0L), "the release granted the lock to the first waiter in line");

        Task<PostgresLease> nextWait = next.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1, nextWait);
        return new GrantedUnheard(proxy, listenPort, granted, grantedWait, nextWait);
    }

    private Task FreedAsync(Member granted, string because) => EventuallyAsync(
        async () => await ScalarAsync<long>(
            $"SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND owner = '{granted.Coordinator.Owner}'") == 0,
        because);

    private sealed record GrantedUnheard(
        TcpProxy Proxy, int ListenPort, Member Granted, Task<PostgresLease> GrantedWait, Task<PostgresLease> NextWait) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            Proxy.ReleaseReplies(ListenPort);
            await Proxy.DisposeAsync();
        }
    }

    /// <summary>
    /// scale-out.md (Failures): "PostgresLease.ReleaseAsync (and disposing a lease) never throws: a lease that was lost
    /// is already free"; DESIGN.md: ReleaseAsync is "a no-op once lost". The heartbeat's renewal of a held lock is held
    /// up at the server (a transaction holds the lock's turn) until the lease's local deadline passes and Lost fires;
    /// then the renewal runs. The server has just renewed the lease for a whole LeaseDuration, but the process counts it
    /// as lost, so neither it nor its holder (whose release is a no-op) gives the lock back: the lock is held by no one
    /// until that renewed lease expires, as a grant answered late would be if it were not given back
    /// (LateAnswerTests).
    /// </summary>
    [PostgresFact]
    public async Task ALeaseLost_WhileItsRenewalWasHeldUpAtTheServer_IsFreeForOthers_OnceTheRenewalHasRun()
    {
        var time = new AsyncTools.Testing.CountingTimeProvider();
        Member member = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.LeaseDuration = TimeSpan.FromMinutes(1);
        });
        Member other = await JoinAsync();
        PostgresLease lease = await member.Coordinator.CreateLock("late").AcquireAsync(Bound);
        string expiresAt = await ScalarAsync<string>("SELECT expires_at::text FROM @schema.permit_slots WHERE token IS NOT NULL");

        await RenewalHeldAtTheServerAsync(
            "SELECT @schema.permit_turn('l', 'late')", member, time, "the heartbeat's renewal waits for the lock's turn",
            async () =>
            {
                await AdvanceUntilLostAsync(time, lease.Lost);
            });

        await EventuallyAsync(
            async () => await ScalarAsync<long>(
                $"SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND expires_at::text = '{expiresAt}'") == 0,
            "the renewal has run");
        await lease.ReleaseAsync(); // a no-op: the lease was lost

        PostgresLock otherLock = other.Coordinator.CreateLock("late");
        PostgresLease? taken = null;
        await EventuallyAsync(
            async () => (taken = await otherLock.TryAcquireAsync()) is not null,
            "the lost lease's lock is free for another process");
        await taken!.ReleaseAsync();
    }
}
