using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
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
/// renewal has run, the server holds the permit for a whole new lease for no one.</item>
/// </list>
/// </summary>
public sealed class UnheldPermitTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>Long enough that a test passing within it proves a wake-up came from a notification, not a poll.</summary>
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

        await using PostgresLease lease = await setup.NextWait.WaitAsync(Bound);
        lease.FencingToken.Should().BeGreaterThan(setup.HeldToken);
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

        await using PostgresLease lease = await setup.NextWait.WaitAsync(Bound);
        lease.FencingToken.Should().BeGreaterThan(setup.HeldToken);
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
        await WaitersAsync(1);

        Session session = await granted.Coordinator.GetSessionAsync(CancellationToken.None);
        int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");
        proxy.HoldReplies(listenPort); // the release's notification does not reach the granted wait
        await held.ReleaseAsync();
        (await PermitRowsAsync()).Should().Be((1L, 0L), "the release granted the lock to the first waiter in line");

        Task<PostgresLease> nextWait = next.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1);
        return new GrantedUnheard(proxy, listenPort, granted, grantedWait, nextWait, held.FencingToken);
    }

    private Task FreedAsync(Member granted, string because) => EventuallyAsync(
        async () => await ScalarAsync<long>(
            $"SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND owner = '{granted.Coordinator.Owner}'") == 0,
        because);

    private sealed record GrantedUnheard(
        TcpProxy Proxy, int ListenPort, Member Granted, Task<PostgresLease> GrantedWait, Task<PostgresLease> NextWait, long HeldToken) : IAsyncDisposable
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

        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, "SELECT @schema.permit_turn('l', 'late')");
            await EventuallyAsync(
                async () =>
                {
                    time.Advance(TimeSpan.FromSeconds(1));
                    return await ScalarAsync<long>(
                        $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{member.Application}' AND wait_event_type = 'Lock'") == 1;
                },
                "the heartbeat's renewal waits for the lock's turn");
            await AdvanceUntilLostAsync(time, lease.Lost);
            await hold.CommitAsync();
        }

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
