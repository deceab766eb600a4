using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

public sealed class PostgresCoordinatorTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task EnsureSchemaAsync_RacingCoordinators_AllSucceed_AndItIsIdempotent()
    {
        var members = new List<Member>();
        for (int i = 0; i < 4; i++)
        {
            members.Add(await JoinAsync(ensureSchema: false));
        }

        await Task.WhenAll(members.Select(m => Task.Run(() => m.Coordinator.EnsureSchemaAsync()))).WaitAsync(Bound);
        await members[0].Coordinator.EnsureSchemaAsync();

        (await ScalarAsync<int>("SELECT max(version) FROM @schema.schema_version")).Should().Be(1);
        await using PostgresLease lease = await members[3].Coordinator.CreateLock("job").AcquireAsync();
        lease.FencingToken.Should().BePositive();
    }

    [PostgresFact]
    public async Task Calls_BeforeEnsureSchemaAsync_SayToCallIt()
    {
        Member a = await JoinAsync(ensureSchema: false);
        var thrown = await FluentActions.Awaiting(async () => await a.Coordinator.CreateLock("job").AcquireAsync())
            .Should().ThrowAsync<PostgresCoordinationException>();
        thrown.Which.Message.Should().Contain("EnsureSchemaAsync");
        thrown.Which.InnerException.Should().BeOfType<Npgsql.PostgresException>();
    }

    [PostgresFact]
    public async Task EnsureSchemaAsync_OnANewerSchema_Refuses()
    {
        Member a = await JoinAsync();
        await ScalarAsync<int>("INSERT INTO @schema.schema_version VALUES (99) RETURNING version");
        var thrown = await FluentActions.Awaiting(() => a.Coordinator.EnsureSchemaAsync()).Should().ThrowAsync<PostgresCoordinationException>();
        thrown.Which.Message.Should().Contain("99");
    }

    [PostgresFact]
    public async Task EnsureSchemaAsync_OnFunctionsOfAnOlderRevision_ReplacesThem()
    {
        Member a = await JoinAsync();
        await ReplacePermitFreeAsync(revision: Database.Revision - 1);

        await a.Coordinator.EnsureSchemaAsync();

        (await ScalarAsync<int>("SELECT @schema.permit_free('s', 'none', 5)")).Should().Be(5, "the library's body is back");
        (await ScalarAsync<int>("SELECT revision FROM @schema.schema_version")).Should().Be(Database.Revision);
    }

    [PostgresFact]
    public async Task EnsureSchemaAsync_OnFunctionsOfANewerRevision_KeepsThem()
    {
        // Another instance, of a later release with the same schema version, installed its functions: they stay.
        Member a = await JoinAsync();
        await ReplacePermitFreeAsync(revision: Database.Revision + 1);

        await a.Coordinator.EnsureSchemaAsync();

        (await ScalarAsync<int>("SELECT @schema.permit_free('s', 'none', 5)")).Should().Be(-1);
        (await ScalarAsync<int>("SELECT revision FROM @schema.schema_version")).Should().Be(Database.Revision + 1);
    }

    [PostgresFact]
    public async Task EnsureSchemaAsync_OnASchemaOfAPreReleaseBuild_RefusesSayingToDropIt()
    {
        // A pre-release build recorded no revision, and its tables differ (jsonb payloads): nothing is changed.
        Member a = await JoinAsync();
        await ScalarAsync<int>(
            "ALTER TABLE @schema.queue_items ALTER COLUMN payload TYPE jsonb; " +
            "ALTER TABLE @schema.schema_version DROP COLUMN revision; SELECT 1");

        var thrown = await FluentActions.Awaiting(() => a.Coordinator.EnsureSchemaAsync()).Should().ThrowAsync<PostgresCoordinationException>();

        thrown.Which.Message.Should().Contain("pre-release").And.Contain("DROP SCHEMA");
        (await ScalarAsync<long>(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = '@schema.schema_version'::regclass AND attname = 'revision' AND NOT attisdropped"))
            .Should().Be(0, "nothing was changed: the script, which adds the column, did not run");
    }

    [PostgresFact]
    public async Task EnsureSchemaAsync_ReplacingTheFunctionsOfASchemaInUse_DoesNotWaitForItsWriters()
    {
        // A rolling deployment of a release with newer functions, while an application transaction that put an item
        // (and so writes queue_items) is still open, and other writers hold the other tables.
        Member a = await JoinAsync();
        await ReplacePermitFreeAsync(revision: Database.Revision - 1);
        await using NpgsqlConnection writer = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction writing = await writer.BeginTransactionAsync();
        await a.Coordinator.CreateQueue<int>("in-use").PutAsync(1, writing);
        await ExecuteAsync(writing,
            "LOCK TABLE @schema.permit_slots, @schema.permit_waiters, @schema.queue_items, @schema.queue_dead_letters, " +
            "@schema.queues, @schema.queue_joins IN ROW EXCLUSIVE MODE");

        await a.Coordinator.EnsureSchemaAsync().WaitAsync(Bound);

        (await ScalarAsync<int>("SELECT @schema.permit_free('s', 'none', 5)")).Should().Be(5);
        await writing.CommitAsync();
        (await a.Coordinator.CreateQueue<int>("in-use").CountAsync()).Should().Be(1);
    }

    [PostgresFact]
    public async Task EnsureSchemaAsync_UpgradingAsTheSchemasOwner_NeedsNoCreateOnTheDatabaseAgain()
    {
        await AsRoleAsync(async role =>
        {
            await ScalarAsync<int>($"GRANT CREATE ON DATABASE postgres TO {role}; SELECT 1");
            Member owner = await JoinAsync(connection: b => b.Username = role); // installs the schema as the role
            await ScalarAsync<int>($"REVOKE CREATE ON DATABASE postgres FROM {role}; SELECT 1");
            await ReplacePermitFreeAsync(revision: Database.Revision - 1);

            await owner.Coordinator.EnsureSchemaAsync();

            (await ScalarAsync<int>("SELECT @schema.permit_free('s', 'none', 5)")).Should().Be(5, "the owner replaced the functions");
            (await ScalarAsync<int>("SELECT revision FROM @schema.schema_version")).Should().Be(Database.Revision);
            return owner;
        });
    }

    [PostgresFact]
    public async Task EnsureSchemaAsync_InASchemaMadeForTheRole_NeedsNoCreateOnTheDatabase()
    {
        await AsRoleAsync(async role =>
        {
            await ScalarAsync<int>($"CREATE SCHEMA \"{Schema}\" AUTHORIZATION {role}; SELECT 1");

            Member member = await JoinAsync(connection: b => b.Username = role); // EnsureSchemaAsync, as the role

            PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("made-for-it");
            await queue.PutAsync(1);
            (await queue.CountAsync()).Should().Be(1);
            return member;
        });
    }

    /// <summary>Runs <paramref name="body"/> with a new login role that has no privilege on the database (nor
    /// <c>CREATE</c>); afterwards disposes the member it returns, drops the schema and the role.</summary>
    private async Task AsRoleAsync(Func<string, Task<Member>> body)
    {
        string role = "schema_role_" + Guid.NewGuid().ToString("N")[..10];
        await ScalarAsync<int>($"CREATE ROLE {role} LOGIN; SELECT 1");
        Member? member = null;
        try
        {
            member = await body(role);
        }
        finally
        {
            if (member is not null)
            {
                await member.Coordinator.DisposeAsync();
                await member.Source.DisposeAsync();
            }

            await ScalarAsync<int>($"DROP SCHEMA IF EXISTS \"{Schema}\" CASCADE; DROP OWNED BY {role}; DROP ROLE {role}; SELECT 1");
        }
    }

    /// <summary>Gives <c>permit_free</c> a body that answers -1 (as another revision's would differ) and records
    /// <paramref name="revision"/> as the installed one.</summary>
    private Task ReplacePermitFreeAsync(int revision) => ScalarAsync<int>(
        "CREATE OR REPLACE FUNCTION @schema.permit_free(p_kind \"char\", p_name text, p_max int) RETURNS int " +
        "LANGUAGE sql VOLATILE AS $$ SELECT -1 $$; " +
        $"UPDATE @schema.schema_version SET revision = {revision}; SELECT 1");

    [PostgresFact]
    public async Task ToString_ShowsTheSession()
    {
        Member a = await JoinAsync();
        a.Coordinator.ToString().Should().Be($"PostgresCoordinator(schema={Schema}, not connected)");
        await using (await a.Coordinator.CreateLock("job").AcquireAsync())
        {
            a.Coordinator.ToString().Should().MatchRegex($@"^PostgresCoordinator\(schema={Schema}, session=backend \d+\)$");
        }
    }

    [PostgresFact]
    public async Task DisposeAsync_ReleasesTheSessionsAdvisoryLock_AndLeavesNoSessionOnTheServer()
    {
        Member a = await JoinAsync();
        string heldByA =
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid " +
            $"WHERE l.locktype = 'advisory' AND l.granted AND s.application_name = '{a.Application}'";
        await using (await a.Coordinator.CreateLock("job").AcquireAsync())
        {
            (await ScalarAsync<long>(heldByA)).Should().Be(1, "the LISTEN connection holds the lock that names the session");
        }

        await a.Coordinator.DisposeAsync();

        (await ScalarAsync<long>(heldByA)).Should().Be(0, "closing the session gives its lock back at once, not when the pool reuses the connection");
        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }

    [PostgresFact]
    public async Task DisposeAsync_WhileACallersTransactionWithAPutIsOpen_LeavesNoWatchRunning()
    {
        var time = new CountingTimeProvider(); // timers fire only when advanced: the watch parks in its first wait
        Member a = await JoinAsync(o => o.TimeProvider = time);
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("emails");
        await using NpgsqlConnection connection = await a.Source.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync();
        await queue.PutAsync(1, transaction);
        await time.WaitForArmedTimersAsync(1).WaitAsync(Bound); // the commit watch waits for its first check

        await a.Coordinator.DisposeAsync();

        time.ActiveTimers.Should().Be(0, "a disposed coordinator leaves no watch of the transaction asking the server for its status");
        await transaction.RollbackAsync();
    }

    [PostgresFact]
    public async Task ASecondDisposeAsync_WhileTheFirstClosesTheSession_CompletesWithTheFirst()
    {
        var time = new CountingTimeProvider(); // no heartbeat meanwhile: only the first DisposeAsync's call waits
        Member a = await JoinAsync(o => o.TimeProvider = time);
        _ = await a.Coordinator.CreateLock("held").AcquireAsync();
        Task? second = null;
        bool secondEndedFirst = false;

        // The first disposal's end_session waits at the server for the set's turn, held here meanwhile.
        Task<bool> first = await CallHeldAtTheServerAsync(
            "SELECT @schema.permit_turn('l', 'held')", a,
            async () =>
            {
                await a.Coordinator.DisposeAsync();
                return true;
            },
            () =>
            {
                second = a.Coordinator.DisposeAsync().AsTask();
                secondEndedFirst = second.IsCompleted;
            });

        await first.WaitAsync(Bound);
        await second!.WaitAsync(Bound);
        secondEndedFirst.Should().BeFalse("a DisposeAsync completes when the session is closed, which the first call was still doing");
    }

    /// <summary>
    /// The LISTEN connection dropped, and the next call is opening a new session (held up: the network does not answer
    /// yet) when the coordinator is disposed. DisposeAsync must not leave that opening behind: once it has returned,
    /// nothing of the coordinator runs, so no new LISTEN session may be opened on the server afterwards.
    /// </summary>
    [PostgresFact]
    public async Task DisposeAsync_WhileTheNextCallReconnects_OpensNoListenSessionAfterItReturned()
    {
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member a = await JoinAsync(
            o => o.LeaseDuration = TimeSpan.FromSeconds(1), port: proxy.Port, connection: b => b.Timeout = 10);
        Session first = await a.Coordinator.GetSessionAsync(CancellationToken.None);
        proxy.Sever(); // the LISTEN connection drops: the session ends, and the next call opens a new one
        await EventuallyAsync(() => Task.FromResult(first.Ended.IsCancellationRequested), "the session ended");
        await a.Coordinator.EnsureSchemaAsync(); // gives the connections the coordinator kept back to the pool...
        a.Source.Clear(); // ...which closes them: the next session needs a new connection

        proxy.HoldNextConnection(); // the new session's connection gets no answer for now (the others do)
        Task<PostgresLease> acquiring = a.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await EventuallyAsync(() => Task.FromResult(proxy.HeldBack > 0), "the new session's connection is being opened");

        await a.Coordinator.DisposeAsync().AsTask().WaitAsync(Bound);
        proxy.ReleaseHeldConnection(); // it gets its answer, after DisposeAsync returned

        // The call ends as every call of a disposed coordinator does; the opening it waited for has ended too.
        await FluentActions.Awaiting(() => acquiring.WaitAsync(Bound)).Should().ThrowAsync<ObjectDisposedException>();
        // A session's connection is the only one that LISTENs, and it sets idle_session_timeout back as it closes: its
        // last statement says so (pg_stat_activity keeps it while the connection sits in the data source's pool).
        long listenSessions = await ScalarAsync<long>(
            $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{a.Application}' AND pid <> {first.Pid} " +
            "AND (query LIKE '%LISTEN%' OR query LIKE '%idle_session_timeout%')");
        listenSessions.Should().Be(0, "nothing of a disposed coordinator runs after DisposeAsync returned: no LISTEN session is opened");
    }

    /// <summary>
    /// The clock (the TimeProvider option) is user code and cannot create a timer: an acquire may fail with its
    /// exception, but the failure loses nothing. The permit the server granted the failed call must not stay held for
    /// no one (it is not renewed, and held until it expires): another process finds the lock free.
    /// </summary>
    [PostgresFact]
    public async Task AnAcquireWithAClockThatCannotCreateATimer_FailsWithItsException_AndLeavesTheLockFree()
    {
        (MisbehavingTimeProvider time, Member a) = await JoinOnAStillClockAsync();
        Member b = await JoinAsync();

        time.CreateTimerThrows = true;
        await FluentActions.Awaiting(async () => await a.Coordinator.CreateLock("job").TryAcquireAsync().AsTask().WaitAsync(Bound))
            .Should().ThrowAsync<InvalidOperationException>("the call fails with the clock's exception");
        time.CreateTimerThrows = false;

        await using PostgresLease? taken = await b.Coordinator.CreateLock("job").TryAcquireAsync();
        taken.Should().NotBeNull("a call that failed holds nothing: the lock is free for the others");
    }

    /// <summary>
    /// The same for a get: the items its call took are not handed over when the clock cannot create their leases'
    /// timers; they go back in line at once, their attempt not counted, rather than staying leased to no one until their
    /// leases expire.
    /// </summary>
    [PostgresFact]
    public async Task AGetWithAClockThatCannotCreateATimer_FailsWithItsException_AndTheItemIsBackInLine()
    {
        (MisbehavingTimeProvider time, Member a) = await JoinOnAStillClockAsync();
        Member b = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("jobs");
        await queue.PutManyAsync([1, 2]);

        time.CreateTimerThrows = true;
        await FluentActions.Awaiting(async () => await queue.GetManyAsync(2).AsTask().WaitAsync(Bound))
            .Should().ThrowAsync<InvalidOperationException>("the call fails with the clock's exception");
        time.CreateTimerThrows = false;

        PostgresQueue<int> otherProcess = b.Coordinator.CreateQueue<int>("jobs");
        IReadOnlyList<PostgresDelivery<int>> again = await otherProcess.GetManyAsync(2, TimeSpan.Zero);
        again.Select(d => (d.Item, d.Attempt)).Should().Equal((1, 1), (2, 1));
        await otherProcess.CompleteManyAsync(again);
    }

    /// <summary>
    /// The heartbeat's clock could not create its timer (the clock is user code). DisposeAsync still closes the session
    /// and completes: it does not throw what the heartbeat met in the background, long before.
    /// </summary>
    [PostgresFact]
    public async Task DisposeAsync_AfterTheHeartbeatsClockFailedToCreateATimer_ClosesTheSessionWithoutThrowing()
    {
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        Member a = await JoinAsync(o => o.TimeProvider = time);
        _ = await a.Coordinator.GetSessionAsync(CancellationToken.None);
        await time.CreationFailed.WaitAsync(Bound); // the heartbeat's first beat could not be timed

        await DisposeShouldCloseTheSessionWithoutThrowingAsync(a);
    }

    /// <summary>
    /// PostgresCoordinatorOptions.TimeProvider: "A provider is user code, and its failures lose nothing"; PostgresLease:
    /// ReleaseAsync "Does not throw when the server cannot be reached" (scale-out.md: "PostgresLease.ReleaseAsync (and
    /// disposing a lease) never throws"); primitives.md: "a timer whose Dispose throws is ignored". The clock's timers
    /// throw from Dispose: releasing the lease must still give the permit back (another process finds the lock free), and
    /// neither the release nor a second release may throw or hang.
    /// </summary>
    [PostgresFact]
    public async Task ReleaseAsync_WithAClockWhoseTimersThrowFromDispose_DoesNotThrow_AndLeavesTheLockFree()
    {
        (MisbehavingTimeProvider time, Member a) = await JoinOnAStillClockAsync();
        Member b = await JoinAsync();
        time.TimerDisposeThrows = true; // the lease's timer, created from now on
        PostgresLease? lease = await a.Coordinator.CreateLock("job").TryAcquireAsync();
        lease.Should().NotBeNull();

        await FluentActions.Awaiting(() => lease!.ReleaseAsync().AsTask().WaitAsync(Bound))
            .Should().NotThrowAsync("a release never throws: a timer whose Dispose throws is ignored");
        await FluentActions.Awaiting(() => lease!.ReleaseAsync().AsTask().WaitAsync(Bound))
            .Should().NotThrowAsync("a later release returns the first one's task, which completes");
        await using PostgresLease? taken = await b.Coordinator.CreateLock("job").TryAcquireAsync();
        taken.Should().NotBeNull("the released lock is free for the others");
    }

    /// <summary>
    /// PostgresCoordinatorOptions.TimeProvider: "A provider is user code, and its failures lose nothing"; primitives.md: "a
    /// timer whose Dispose throws is ignored"; DisposeAsync: "Ends the coordinator: its session ends (...) leases held are
    /// lost and given back to the server" and returns "A task that completes when the session is closed" (no exception
    /// listed). The heartbeat's timer throws from Dispose: DisposeAsync must still close the session and not throw.
    /// </summary>
    [PostgresFact]
    public async Task DisposeAsync_WithAClockWhoseTimersThrowFromDispose_ClosesTheSessionWithoutThrowing()
    {
        var time = new MisbehavingTimeProvider { TimerDisposeThrows = true };
        Member a = await JoinAsync(o => o.TimeProvider = time);
        _ = await a.Coordinator.GetSessionAsync(CancellationToken.None);
        await time.FirstDueTime.WaitAsync(Bound); // the heartbeat waits for its first beat, on a timer that throws from Dispose

        await DisposeShouldCloseTheSessionWithoutThrowingAsync(a);
    }

    /// <summary>
    /// primitives.md: "a timer whose Dispose throws is ignored (the wait keeps what it got)". A timed wait for the lock is
    /// woken by a release in its own process, which ends the wait's timer early (from the runtime's code, on the pool):
    /// the release returns, the wait gets the lock, and nothing throws anywhere (an exception on the pool would end the
    /// test host).
    /// </summary>
    [PostgresFact]
    public async Task ATimedWaitWokenByARelease_WithAClockWhoseTimersThrowFromDispose_GetsTheLock()
    {
        var time = new MisbehavingTimeProvider();
        Member a = await JoinAsync(o => o.TimeProvider = time);
        PostgresLock jobLock = a.Coordinator.CreateLock("job");
        PostgresLease held = await jobLock.AcquireAsync(Bound);
        time.TimerDisposeThrows = true;
        Task<PostgresLease> waiting = jobLock.AcquireAsync(TimeSpan.FromMinutes(5)).AsTask();
        await WaitersAsync(1);

        await FluentActions.Awaiting(() => held.ReleaseAsync().AsTask().WaitAsync(Bound)).Should().NotThrowAsync();
        await using PostgresLease next = await waiting.WaitAsync(Bound); // the wait got the lock
    }

    /// <summary>A member on a <see cref="MisbehavingTimeProvider"/> that stands still, its session open and its heartbeat
    /// waiting for a first beat that never comes: the clock's misbehaviour switched on after this meets only the call
    /// under test.</summary>
    private async Task<(MisbehavingTimeProvider Time, Member Member)> JoinOnAStillClockAsync()
    {
        var time = new MisbehavingTimeProvider();
        Member member = await JoinAsync(o => o.TimeProvider = time);
        _ = await member.Coordinator.GetSessionAsync(CancellationToken.None);
        await time.FirstDueTime.WaitAsync(Bound);
        return (time, member);
    }

    /// <summary>DisposeAsync completes without throwing, and the session's advisory lock is no longer held.</summary>
    private async Task DisposeShouldCloseTheSessionWithoutThrowingAsync(Member member)
    {
        await FluentActions.Awaiting(() => member.Coordinator.DisposeAsync().AsTask().WaitAsync(Bound))
            .Should().NotThrowAsync("DisposeAsync completes when the session is closed");
        (await ScalarAsync<long>(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid " +
            $"WHERE l.locktype = 'advisory' AND l.granted AND s.application_name = '{member.Application}'"))
            .Should().Be(0, "the session is closed");
    }
}
