using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Server settings a database or role may carry, and that the coordinator must work under.
/// <list type="bullet">
/// <item><c>default_transaction_isolation</c> SERIALIZABLE or REPEATABLE READ: the schema's functions are written for
/// READ COMMITTED (each statement sees what committed before it), so the coordinator runs its own calls at READ
/// COMMITTED whatever the data source's default, and gives its connections back with that default as it found it. (The
/// contract suites run on such a database too: see the <c>OnSerializableDatabase</c> contract classes.)</item>
/// <item><c>idle_session_timeout</c>: a connection the server ended while it was idle is replaced; the LISTEN
/// connection, idle by design, is exempt.</item>
/// </list>
/// </summary>
public sealed class ServerSettingsTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>Connections that start every transaction at SERIALIZABLE, as a database's or role's
    /// <c>default_transaction_isolation</c> would make them.</summary>
    public static readonly Action<NpgsqlConnectionStringBuilder> Serializable =
        b => b.Options = "-c default_transaction_isolation=serializable";

    [PostgresFact]
    public async Task OnASerializableDatabase_TasksOnTwoCoordinators_ShareASemaphoreAndAQueue_NothingLostOrDuplicated()
    {
        const int MaxCount = 2;
        const int Tasks = 8;
        const int Rounds = 10;
        const int Items = 200;
        Member a = await JoinAsync(connection: Serializable);
        Member b = await JoinAsync(connection: Serializable);
        int inside = 0;
        int peak = 0;
        int served = 0;

        async Task HoldAsync(PostgresSemaphore semaphore)
        {
            for (int i = 0; i < Rounds; i++)
            {
                await using PostgresLease lease = await semaphore.AcquireAsync();
                Peak.Raise(ref peak, Interlocked.Increment(ref inside));

                await Task.Yield(); // another task runs while this one holds its permit
                Interlocked.Decrement(ref inside);
                Interlocked.Increment(ref served);
            }
        }

        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        var completed = new System.Collections.Concurrent.ConcurrentBag<int>();
        using var done = new CancellationTokenSource();

        async Task ConsumeAsync(PostgresQueue<int> queue)
        {
            try
            {
                while (true)
                {
                    await using PostgresDelivery<int> delivery = await queue.GetAsync(done.Token);
                    await delivery.CompleteAsync();
                    completed.Add(delivery.Item);
                    if (completed.Count == Items)
                    {
                        done.Cancel();
                    }
                }
            }
            catch (OperationCanceledException) when (done.IsCancellationRequested)
            {
            }
        }

        Task[] work =
        [
            .. Enumerable.Range(0, Tasks).Select(i => Task.Run(() => HoldAsync((i % 2 == 0 ? a : b).Coordinator.CreateSemaphore("api", MaxCount)))),
            .. new[] { queueA, queueA, queueB, queueB }.Select(q => Task.Run(() => ConsumeAsync(q))),
            Task.Run(async () => { for (int i = 0; i < Items; i += 2) { await queueA.PutAsync(i); } }),
            Task.Run(async () => { for (int i = 1; i < Items; i += 2) { await queueB.PutAsync(i); } }),
        ];
        await Task.WhenAll(work).WaitAsync(TimeSpan.FromSeconds(90));

        peak.Should().BeLessThanOrEqualTo(MaxCount);
        served.Should().Be(Tasks * Rounds);
        completed.Order().Should().Equal(Enumerable.Range(0, Items), "every item is completed exactly once");
        (await queueA.UnfinishedAsync()).Should().Be(0);
        (await PermitRowsAsync()).Should().Be((0L, 0L), "every permit was given back and no place in line is left");
    }

    [PostgresFact]
    public async Task ConnectionsEndedByIdleSessionTimeout_AreReplaced_AndAPutRunsOnce()
    {
        // The server ends a session idle for a second; the coordinator's kept connection (and the pool's) then answers
        // its next statement with that error (57P05), before the statement runs.
        Member member = await JoinAsync(connection: b => b.Options = "-c idle_session_timeout=1000");
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("idle");
        await queue.PutAsync(1);
        await BackendsEndedAsync(member);

        // A put must not run twice: it is tried again on a new connection only because the statement never ran.
        await queue.PutAsync(2);
        await BackendsEndedAsync(member);

        // A read may run twice.
        (await queue.CountAsync()).Should().Be(2);
    }

    [PostgresFact]
    public async Task UnderIdleSessionTimeout_TheListenConnectionStaysOpen_AndALeaseIsKept()
    {
        // Between notifications the LISTEN connection is idle by design (pinged only every LeaseDuration / 3): a
        // database's or role's idle_session_timeout must not end it, and with it every lease of the process.
        const string IdleSecond = "-c idle_session_timeout=1000";
        Member member = await JoinAsync(
            configure: o => o.LeaseDuration = TimeSpan.FromMinutes(2),
            connection: b => b.Options = IdleSecond);
        await using PostgresLease lease = await member.Coordinator.CreateLock("kept").AcquireAsync();
        int listening = member.Coordinator.CurrentSession!.Pid;

        // Two connections with the same setting, each opened after the last and each ended by the server: the LISTEN
        // connection has then been idle for more than two timeouts.
        for (int i = 0; i < 2; i++)
        {
            await using NpgsqlDataSource canary = Server.CreateDataSource(b =>
            {
                b.ApplicationName = "canary";
                b.Options = IdleSecond;
                b.Pooling = false;
            });
            await using NpgsqlConnection idle = await canary.OpenConnectionAsync();
            int pid = idle.ProcessID;
            await EventuallyAsync(
                async () => await ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == 0,
                "the server ends a connection idle for longer than idle_session_timeout");
        }

        (await ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE pid = {listening}"))
            .Should().Be(1, "the LISTEN connection is exempt from the idle timeout");
        lease.Lost.IsCancellationRequested.Should().BeFalse();
        member.Coordinator.CurrentSession!.Pid.Should().Be(listening, "the session never ended");
    }

    /// <summary>Waits until the server has ended every session of <paramref name="member"/> (its idle timeout).</summary>
    private Task BackendsEndedAsync(Member member) => EventuallyAsync(
        async () => await ScalarAsync<long>(
            $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{member.Application}'") == 0,
        "the server ends idle sessions after idle_session_timeout");

    [PostgresFact]
    public async Task ConnectionsGoBackToThePool_WithTheDataSourcesSettings()
    {
        // No reset when a connection goes back to the pool: what the coordinator set on a session would stay with it.
        const int Pool = 12;
        Member member = await JoinAsync(connection: b =>
        {
            b.Options = "-c default_transaction_isolation=serializable -c idle_session_timeout=600000";
            b.NoResetOnClose = true;
            b.MaxPoolSize = Pool;
        });
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("counted");
        for (int round = 0; round < 3; round++)
        {
            // More calls at once than the coordinator keeps connections for: some go back to the pool at once.
            await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => queue.CountAsync().AsTask()));
        }

        // A lock opens the session, whose LISTEN connection goes back to the pool when the coordinator is disposed.
        await (await member.Coordinator.CreateLock("session").AcquireAsync()).DisposeAsync();
        await member.Coordinator.DisposeAsync();

        // Every connection of the pool at once (those the coordinator used among them), each asked its default.
        NpgsqlConnection[] connections = await Task.WhenAll(
            Enumerable.Range(0, Pool).Select(_ => member.Source.OpenConnectionAsync().AsTask()));
        try
        {
            foreach (NpgsqlConnection connection in connections)
            {
                await using var show = new NpgsqlCommand(
                    "SELECT current_setting('default_transaction_isolation') || ' ' || current_setting('idle_session_timeout')",
                    connection);
                ((string)(await show.ExecuteScalarAsync())!).Should().Be("serializable 10min");
            }
        }
        finally
        {
            foreach (NpgsqlConnection connection in connections)
            {
                await connection.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// The data source's pool is full (<c>Max Pool Size</c> 2: the LISTEN connection and one for calls). A call of the
    /// coordinator is held up at the server; another waits for the pool. When the first is done, its connection must
    /// reach the second (through the pool), not be kept open idle for a later call while the second waits for the
    /// pool's timeout (two minutes here).
    /// </summary>
    [PostgresFact]
    public async Task ACallWaitingForAFullPool_GetsTheConnectionAnotherCallIsDoneWith()
    {
        (Member member, PostgresQueue<int> queue) = await JoinWithAPoolOfTwoAsync();
        (await queue.TryGetAsync()).Should().BeNull(); // the session's LISTEN connection is open

        Task<long> held;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync())
        {
            await ExecuteAsync(hold, "LOCK TABLE @schema.queue_items IN ACCESS EXCLUSIVE MODE");
            held = queue.CountAsync().AsTask();
            await WaitsForALockAsync(member, "the first call holds the pool's other connection");
            Task<PostgresDelivery<int>?> waiting = queue.TryGetAsync().AsTask();
            await hold.CommitAsync();
            await held.WaitAsync(Bound);

            (await waiting.WaitAsync(Bound)).Should().BeNull();
        }
    }

    /// <summary>The same for the schema's installation, which opens its own connection: a pool of two, the session's
    /// LISTEN connection and a call held at the server; <see cref="PostgresCoordinator.EnsureSchemaAsync"/> waits for
    /// the pool, and gets the call's connection when it is done.</summary>
    [PostgresFact]
    public async Task EnsureSchemaWaitingForAFullPool_GetsTheConnectionACallIsDoneWith()
    {
        (Member member, PostgresQueue<int> queue) = await JoinWithAPoolOfTwoAsync();
        (await queue.TryGetAsync()).Should().BeNull();

        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync();
        await ExecuteAsync(hold, "LOCK TABLE @schema.queue_items IN ACCESS EXCLUSIVE MODE");
        Task<long> held = queue.CountAsync().AsTask();
        await WaitsForALockAsync(member, "the call holds the pool's other connection");
        Task ensuring = member.Coordinator.EnsureSchemaAsync();
        await hold.CommitAsync();
        await held.WaitAsync(Bound);

        await ensuring.WaitAsync(Bound);
    }

    /// <summary>The session's LISTEN connection, opened when the pool is full with connections the coordinator keeps
    /// open for its calls: two calls that need no session ran at once (held at the server), and both connections were
    /// kept. A get then opens the session: the kept connections go back to the pool first, or it would wait for the
    /// pool's timeout.</summary>
    [PostgresFact]
    public async Task ASessionOpenedWhileThePoolIsFullOfKeptConnections_GetsOne()
    {
        (Member member, PostgresQueue<int> queue) = await JoinWithAPoolOfTwoAsync();
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync())
        {
            await ExecuteAsync(hold, "LOCK TABLE @schema.queue_items IN ACCESS EXCLUSIVE MODE");
            Task<long> first = queue.CountAsync().AsTask();
            Task<long> second = queue.CountAsync().AsTask();
            await WaitsForALockAsync(member, "two calls hold the pool's two connections", count: 2);
            await hold.CommitAsync();
            await Task.WhenAll(first, second).WaitAsync(Bound);
        }

        (await queue.TryGetAsync().AsTask().WaitAsync(Bound)).Should().BeNull(); // opens the session
    }

    /// <summary>A coordinator whose data source's pool holds two connections (its session's LISTEN connection and one
    /// for calls) and waits two minutes for one, and its queue "jobs".</summary>
    private async Task<(Member Member, PostgresQueue<int> Queue)> JoinWithAPoolOfTwoAsync()
    {
        Member member = await JoinAsync(connection: b =>
        {
            b.MaxPoolSize = 2;
            b.Timeout = 120;
        });
        return (member, member.Coordinator.CreateQueue<int>("jobs"));
    }
}
