using System.Diagnostics;
using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Locks and semaphores when things break: a killed backend, a cut-off or dropped connection, a server restart, a
/// disposed coordinator. Each must give typed exceptions to the calls in progress, lose (and free) the leases of the
/// process that broke, leave nothing behind, and let later calls work.
/// </summary>
public sealed class PermitFailureTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task HolderBackendsTerminated_HolderSeesLost_AndAWaiterGetsThePermitWellBeforeExpiry()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync();
        Task<PostgresLease> waiting = b.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1);

        var clock = Stopwatch.StartNew();
        (await TerminateAsync(a)).Should().BeGreaterThan(0);

        await WaitForLostAsync(held.Lost);
        await using PostgresLease taken = await waiting.WaitAsync(Bound);
        clock.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(10), "a dead session frees its permits without waiting for the 30 s lease");
        taken.FencingToken.Should().BeGreaterThan(held.FencingToken);
        await held.ReleaseAsync(); // a no-op for a lost lease, and no exception

        // The coordinator that lost its connection works again.
        await taken.ReleaseAsync();
        await using PostgresLease again = await a.Coordinator.CreateLock("job").AcquireAsync().AsTask().WaitAsync(Bound);
        again.FencingToken.Should().BeGreaterThan(taken.FencingToken);
    }

    [PostgresFact]
    public async Task WaiterBackendsTerminated_FailTheWaitWithPostgresCoordinationException_AndLeaveNothingInLine()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        Member c = await JoinAsync();
        PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync();
        Task<PostgresLease> dying = b.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1);

        await TerminateAsync(b);
        await FluentActions.Awaiting(() => dying.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();

        // The dead waiter's place does not block the line.
        Task<PostgresLease> next = c.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await held.ReleaseAsync();
        await using PostgresLease lease = await next.WaitAsync(Bound);
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.permit_waiters")).Should().Be(0);
    }

    [PostgresFact]
    public async Task RowsOfAProcessThatDiedWithoutCleaningUp_DoNotHoldBackTheNextAcquire()
    {
        Member a = await JoinAsync();
        PostgresSemaphore semaphore = a.Coordinator.CreateSemaphore("api", 1);
        await (await semaphore.AcquireAsync()).ReleaseAsync(); // the permit's row exists

        // A process that died (its session's advisory lock is free, so its session has ended) and left a permit held
        // and a place in line ahead of everyone, both far from expiry.
        await ScalarAsync<int>(
            "UPDATE @schema.permit_slots SET token = nextval('@schema.ids'), owner = gen_random_uuid(), session = 4242, " +
            "lease = '1 hour', acquired_at = now(), expires_at = now() + interval '1 hour' WHERE name = 'api'; " +
            "INSERT INTO @schema.permit_waiters (ticket, kind, name, owner, session, lease, expires_at) " +
            "VALUES (nextval('@schema.ids'), 's', 'api', gen_random_uuid(), 4242, '1 hour', now() + interval '1 hour'); SELECT 1");

        // Not even a wait: the acquire frees both and takes the permit.
        await using PostgresLease? lease = await semaphore.TryAcquireAsync();
        lease.Should().NotBeNull("a holder and a waiter whose session has ended count for nothing");
        (await PermitRowsAsync()).Should().Be((1L, 0L));
    }

    [PostgresFact]
    public async Task CutOffHolder_SeesLostWithinLeaseDuration_BeforeAnyoneElseGetsThePermit()
    {
        // Long enough that Lost's margin (a tenth of the lease) absorbs this process's scheduling delays on a loaded machine.
        TimeSpan leaseDuration = TimeSpan.FromSeconds(5);
        await using var proxy = new TcpProxy("127.0.0.1", new Npgsql.NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member cutOff = await JoinAsync(o => o.LeaseDuration = leaseDuration, port: proxy.Port);
        Member other = await JoinAsync(o => o.LeaseDuration = leaseDuration);
        PostgresLease held = await cutOff.Coordinator.CreateSemaphore("api", 1).AcquireAsync();

        var clock = Stopwatch.StartNew();
        proxy.Freeze(); // the server still sees the holder's connections open
        TimeSpan lostAt = TimeSpan.MaxValue;
        using CancellationTokenRegistration onLost = held.Lost.Register(() => lostAt = clock.Elapsed);

        await using PostgresLease taken = await other.Coordinator.CreateSemaphore("api", 1).AcquireAsync().AsTask().WaitAsync(Bound);
        TimeSpan takenAt = clock.Elapsed;

        await WaitForLostAsync(held.Lost);
        lostAt.Should().BeLessThanOrEqualTo(leaseDuration, "Lost fires within the lease duration");
        lostAt.Should().BeLessThan(takenAt, "the holder stops relying on the permit before anyone else gets it");
        takenAt.Should().BeLessThan(leaseDuration + TimeSpan.FromSeconds(3), "the server frees the permit when the lease expires");

        proxy.Thaw();
        await taken.ReleaseAsync();
        await using PostgresLease again = await cutOff.Coordinator.CreateSemaphore("api", 1).AcquireAsync().AsTask().WaitAsync(Bound);
        again.FencingToken.Should().BeGreaterThan(taken.FencingToken);
    }

    [PostgresFact]
    public async Task DroppedConnections_FailWaitsInProgress_LoseLeases_AndLaterCallsWork()
    {
        await using var proxy = new TcpProxy("127.0.0.1", new Npgsql.NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member dropped = await JoinAsync(port: proxy.Port);
        Member other = await JoinAsync();
        PostgresLease otherHeld = await other.Coordinator.CreateLock("queue-head").AcquireAsync();
        PostgresLease held = await dropped.Coordinator.CreateLock("job").AcquireAsync();
        Task<PostgresLease> waiting = dropped.Coordinator.CreateLock("queue-head").AcquireAsync().AsTask();
        await WaitersAsync(1);

        proxy.Sever();

        await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        await WaitForLostAsync(held.Lost);
        await using PostgresLease taken = await other.Coordinator.CreateLock("job").AcquireAsync().AsTask().WaitAsync(Bound);

        await otherHeld.ReleaseAsync();
        await using PostgresLease again = await dropped.Coordinator.CreateLock("queue-head").AcquireAsync().AsTask().WaitAsync(Bound);
        again.FencingToken.Should().BeGreaterThan(otherHeld.FencingToken);
    }

    [PostgresRestartFact]
    public async Task ServerRestart_FailsWaitsInProgress_LosesLeases_NothingLeaks_AndLaterCallsWork()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresLease held = await a.Coordinator.CreateSemaphore("api", 1).AcquireAsync();
        Task<PostgresLease> waiting = b.Coordinator.CreateSemaphore("api", 1).AcquireAsync().AsTask();
        await WaitersAsync(1);

        Server.Restart();

        await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        await WaitForLostAsync(held.Lost);

        // Both coordinators reconnect; the dead sessions' rows neither block nor count.
        PostgresSemaphore semB = b.Coordinator.CreateSemaphore("api", 1);
        PostgresLease after = await semB.AcquireAsync().AsTask().WaitAsync(Bound);
        after.FencingToken.Should().BeGreaterThan(held.FencingToken, "tokens never repeat, also across a restart");
        (await a.Coordinator.CreateSemaphore("api", 1).TryAcquireAsync()).Should().BeNull();
        await after.ReleaseAsync();
        (await semB.GetCurrentCountAsync()).Should().Be(1);
        (await PermitRowsAsync()).Holders.Should().Be(0);
    }

    /// <summary>
    /// A grant writes to unlogged tables only, so its commit is not flushed, and the sequence writes its state to the WAL
    /// only every 32 values: a grant can hand out a token the sequence logged ahead in another grant's transaction that
    /// has not committed. A crash then loses the sequence's record; the tokens handed out after it must still be greater.
    /// </summary>
    [PostgresRestartFact]
    public Task ServerCrash_RightAfterAGrantWhoseTokenWasNotYetFlushed_LaterTokensAreStillGreater() => WithServerSettingsAsync(
        async () =>
        {
            PostgresLease handedOut = await CrashRightAfterAnUnflushedGrantAsync();

            Member c = await JoinAsync();
            foreach (string name in new[] { "y", "z", "y" })
            {
                await using PostgresLease later = await c.Coordinator.CreateLock(name).AcquireAsync().AsTask().WaitAsync(Bound);
                later.FencingToken.Should().BeGreaterThan(handedOut.FencingToken, "tokens never repeat, also across a crash");
            }
        },
        ("wal_writer_delay", "10s"));

    /// <summary>The jump after a crash is flushed as it commits, also where <c>synchronous_commit</c> is off: a second
    /// crash right after it (the WAL writer slowed) does not undo it, so the tokens granted after the first crash are
    /// not handed out again after the second.</summary>
    [PostgresRestartFact]
    public Task TwoCrashesInARow_WithSynchronousCommitOff_LaterTokensAreStillGreater() => WithServerSettingsAsync(
        async () =>
        {
            Member a = await JoinAsync();
            await (await a.Coordinator.CreateLock("x").AcquireAsync()).ReleaseAsync();
            Server.Restart(crash: true);

            Member b = await JoinAsync();
            PostgresLease afterFirst = await b.Coordinator.CreateLock("y").AcquireAsync().AsTask().WaitAsync(Bound); // jumps
            Server.Restart(crash: true);
            await WaitForLostAsync(afterFirst.Lost);

            Member c = await JoinAsync();
            await using PostgresLease afterSecond = await c.Coordinator.CreateLock("y").AcquireAsync().AsTask().WaitAsync(Bound);
            afterSecond.FencingToken.Should().BeGreaterThan(afterFirst.FencingToken, "tokens never repeat, also across two crashes");
        },
        ("wal_writer_delay", "10s"),
        ("synchronous_commit", "off"));

    /// <summary>
    /// After a crash, a first grant that is paused (here by a <c>nextval</c> wrapper first on its connections'
    /// search_path, which waits for a gate after taking its value; in life, the OS preempting its backend) while another
    /// grant jumps the sequence and commits must not hand out a token it took before the jump: the token is taken after
    /// the look at the lock tables. (Taken first, it was the token handed out before the crash.)
    /// </summary>
    [PostgresRestartFact]
    public Task ServerCrash_AFirstGrantPausedWhileAnotherJumps_StillHandsOutAGreaterToken() => WithServerSettingsAsync(
        async () =>
        {
            const long Gate = 7_770_001;
            string hook = Schema + "_hook";
            await AdminAsync($"CREATE SCHEMA \"{hook}\"");
            await AdminAsync(
                $"CREATE FUNCTION \"{hook}\".nextval(regclass) RETURNS bigint LANGUAGE plpgsql AS $$ DECLARE v bigint := " +
                $"pg_catalog.nextval($1); BEGIN PERFORM pg_catalog.pg_advisory_xact_lock_shared({Gate}); RETURN v; END $$");
            try
            {
                PostgresLease handedOut = await CrashRightAfterAnUnflushedGrantAsync();

                Member paused = await JoinAsync(connection: s => s.SearchPath = $"\"{hook}\", pg_catalog");
                Member jumper = await JoinAsync();
                await using NpgsqlConnection gateHolder = await Admin.OpenConnectionAsync();
                await using (var close = new NpgsqlCommand($"SELECT pg_advisory_lock({Gate})", gateHolder))
                {
                    await close.ExecuteNonQueryAsync();
                }

                await ScalarAsync<long>("SELECT nextval('@schema.ids')"); // a value taken since the crash, by anything
                Task<PostgresLease> late = paused.Coordinator.CreateLock("y").AcquireAsync().AsTask(); // the lock of handedOut
                await WaitsForALockAsync(paused, "the first grant took a value and waits at the gate");
                Task<PostgresLease> jumping = jumper.Coordinator.CreateLock("w").AcquireAsync().AsTask();
                await EventuallyAsync(
                    async () => jumping.IsCompleted || await ScalarAsync<long>(
                        $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{jumper.Application}' AND wait_event_type = 'Lock'") == 1,
                    "the other grant has jumped, or waits for the paused one's jump");
                await using (var open = new NpgsqlCommand($"SELECT pg_advisory_unlock({Gate})", gateHolder))
                {
                    await open.ExecuteNonQueryAsync();
                }

                await using PostgresLease jumped = await jumping.WaitAsync(Bound);
                await using PostgresLease lateLease = await late.WaitAsync(Bound);
                jumped.FencingToken.Should().BeGreaterThan(handedOut.FencingToken);
                lateLease.FencingToken.Should().BeGreaterThan(handedOut.FencingToken, "tokens never repeat, also across a crash");
            }
            finally
            {
                await AdminAsync($"DROP SCHEMA IF EXISTS \"{hook}\" CASCADE");
            }
        },
        ("wal_writer_delay", "10s"));

    /// <summary>
    /// A schema at revision 4, whose grants did not move the sequence ahead after a crash: the server crashes, a process
    /// still on revision 4 grants after the restart (so the lock tables are no longer empty), and only then does
    /// <c>EnsureSchemaAsync</c> bring the schema to revision 5. The upgrade moves the sequence ahead itself, so the tokens
    /// granted after it are greater than those handed out before the crash.
    /// </summary>
    [PostgresRestartFact]
    public Task UpgradeFromRevision4AfterACrash_LaterTokensAreStillGreater() => WithServerSettingsAsync(
        async () =>
        {
            await JoinAsync(); // installs the schema
            await AdminAsync(Revision4Grant);
            await AdminAsync("UPDATE @schema.schema_version SET revision = 4");
            PostgresLease handedOut = await CrashRightAfterAnUnflushedGrantAsync(ensureSchema: false);

            Member old = await JoinAsync(ensureSchema: false); // an instance of revision 4, still running
            await using (await old.Coordinator.CreateLock("z").AcquireAsync().AsTask().WaitAsync(Bound))
            {
            }

            Member upgraded = await JoinAsync();
            (await ScalarAsync<int>("SELECT revision FROM @schema.schema_version")).Should().Be(Database.Revision);
            await using PostgresLease later = await upgraded.Coordinator.CreateLock("y").AcquireAsync().AsTask().WaitAsync(Bound);
            later.FencingToken.Should().BeGreaterThan(handedOut.FencingToken, "tokens never repeat, also across a crash before an upgrade");
        },
        ("wal_writer_delay", "10s"));

    /// <summary>permit_grant as revision 4 had it: the token taken first, no jump after a crash (under the parameters
    /// the functions that call it pass now; revision 8 added p_claimed).</summary>
    private const string Revision4Grant = """
        CREATE OR REPLACE FUNCTION @schema.permit_grant(
            p_kind "char", p_name text, p_ticket bigint, p_owner uuid, p_session bigint, p_lease interval, p_claimed boolean)
        RETURNS bigint
        LANGUAGE plpgsql AS $$
        DECLARE
            v_token bigint := nextval('@schema.ids');
            v_slot int;
        BEGIN
            SELECT h.slot INTO v_slot FROM @schema.permit_slots h
            WHERE h.kind = p_kind AND h.name = p_name AND (h.token IS NULL OR h.expires_at <= now())
            ORDER BY h.slot LIMIT 1;
            IF FOUND THEN
                UPDATE @schema.permit_slots h
                SET token = v_token, ticket = p_ticket, owner = p_owner, session = p_session, lease = p_lease,
                    acquired_at = now(), expires_at = now() + p_lease
                WHERE h.kind = p_kind AND h.name = p_name AND h.slot = v_slot;
            ELSE
                INSERT INTO @schema.permit_slots (kind, name, slot, token, ticket, owner, session, lease, acquired_at, expires_at)
                SELECT p_kind, p_name, coalesce(max(h.slot) + 1, 0), v_token, p_ticket, p_owner, p_session, p_lease, now(), now() + p_lease
                FROM @schema.permit_slots h WHERE h.kind = p_kind AND h.name = p_name;
            END IF;
            RETURN v_token;
        END
        $$
        """;

    [PostgresFact]
    public async Task DisposingTheCoordinator_FailsItsWaitsWithObjectDisposed_AndFreesItsLeasesAtOnce()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresLease bHeld = await b.Coordinator.CreateLock("other").AcquireAsync();
        PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync();
        Task<PostgresLease> waiting = a.Coordinator.CreateLock("other").AcquireAsync().AsTask();
        await WaitersAsync(1);

        await a.Coordinator.DisposeAsync();

        await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<ObjectDisposedException>();
        await WaitForLostAsync(held.Lost);
        (await b.Coordinator.CreateLock("job").TryAcquireAsync()).Should().NotBeNull("the disposed coordinator gave its permit back");
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.permit_waiters")).Should().Be(0);
        await FluentActions.Awaiting(async () => await a.Coordinator.CreateLock("job").AcquireAsync()).Should().ThrowAsync<ObjectDisposedException>();
        await bHeld.ReleaseAsync();
    }

    /// <summary>
    /// The LISTEN connection stops answering (an idle connection dropped silently on the way, which the ping exists to
    /// catch) while the process still reaches the server on its other connections. Its wait in progress throws
    /// (documented: "nothing is granted to a call that throws it"); then no one waits and no one holds the semaphore,
    /// so once its holder releases it, another process's TryAcquireAsync must get it and GetCurrentCountAsync must
    /// say it is free (the session's backend still exists, so its place would be live on the server unless freed).
    /// </summary>
    [PostgresFact]
    public async Task AListenConnectionThatStopsAnswering_FailsTheWait_AndLeavesNoPlaceToTakeTheNextPermit()
    {
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member cut = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(3), port: proxy.Port);
        Member holder = await JoinAsync();
        Member other = await JoinAsync();
        PostgresLease held = await holder.Coordinator.CreateSemaphore("ghost", 1).AcquireAsync(Bound);
        Task<PostgresLease> waiting = cut.Coordinator.CreateSemaphore("ghost", 1).AcquireAsync().AsTask();
        await WaitersAsync(1);

        Session session = await cut.Coordinator.GetSessionAsync(CancellationToken.None);
        int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");
        proxy.HoldReplies(listenPort); // the next ping gets no answer

        await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();

        await held.ReleaseAsync();
        PostgresSemaphore semaphore = other.Coordinator.CreateSemaphore("ghost", 1);
        long ghost = await ScalarAsync<long>(
            $"SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND owner = '{cut.Coordinator.Owner}'");
        (await semaphore.GetCurrentCountAsync()).Should().Be(
            1, $"no one holds the permit: the only wait failed (permits the server granted to the failed wait's place: {ghost})");
        await using PostgresLease? taken = await semaphore.TryAcquireAsync();
        taken.Should().NotBeNull("no one holds the semaphore and no one waits for it");
        proxy.ReleaseReplies(listenPort);
    }

    /// <summary>Runs <paramref name="body"/> with the server's <paramref name="settings"/> (ALTER SYSTEM), reset after it.</summary>
    private async Task WithServerSettingsAsync(Func<Task> body, params (string Name, string Value)[] settings)
    {
        foreach ((string name, string value) in settings)
        {
            await AdminAsync($"ALTER SYSTEM SET {name} = '{value}'");
        }

        await AdminAsync("SELECT pg_reload_conf()");
        try
        {
            await body();
        }
        finally
        {
            foreach ((string name, _) in settings)
            {
                await AdminAsync($"ALTER SYSTEM RESET {name}");
            }

            await AdminAsync("SELECT pg_reload_conf()");
        }
    }

    /// <summary>
    /// Crashes the server (<c>pg_ctl restart -m immediate</c>) right after lock "y" was granted a token from a range the
    /// sequence logged ahead in a grant of lock "x" held uncommitted by a row lock, so that the crash loses the
    /// sequence's record (with the WAL writer slowed). Returns the lease of "y", lost by then.
    /// </summary>
    private async Task<PostgresLease> CrashRightAfterAnUnflushedGrantAsync(bool ensureSchema = true)
    {
        Member a = await JoinAsync(ensureSchema: ensureSchema);
        Member b = await JoinAsync(ensureSchema: ensureSchema);
        await (await a.Coordinator.CreateLock("x").AcquireAsync()).ReleaseAsync(); // the slots exist
        await (await b.Coordinator.CreateLock("y").AcquireAsync()).ReleaseAsync();
        await ScalarAsync<long>("SELECT setval('@schema.ids', (SELECT last_value FROM @schema.ids) + 1000)"); // the next value logs ahead

        NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        NpgsqlTransaction hold = await connection.BeginTransactionAsync();
        await ExecuteAsync(hold, "SELECT 1 FROM @schema.permit_slots WHERE name = 'x' FOR UPDATE");
        Task<PostgresLease> logging = a.Coordinator.CreateLock("x").AcquireAsync().AsTask();
        await WaitsForALockAsync(a, "the grant that logged the sequence ahead waits for the held row, uncommitted");
        PostgresLease handedOut = await b.Coordinator.CreateLock("y").AcquireAsync(); // a token from the logged range

        Server.Restart(crash: true);

        await FluentActions.Awaiting(() => logging.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        await WaitForLostAsync(handedOut.Lost);
        await FluentActions.Awaiting(async () => await connection.DisposeAsync()).Should().NotThrowAsync();
        return handedOut;
    }

    private async Task AdminAsync(string sql)
    {
        await using NpgsqlCommand command = Admin.CreateCommand(sql.Replace("@schema", $"\"{Schema}\"", StringComparison.Ordinal));
        await command.ExecuteNonQueryAsync();
    }
}
