using Npgsql;

namespace AsyncPrimitives.Postgres.Tests.Support;

/// <summary>
/// What a test against the server works in: a schema of its own (dropped at the end) and as many coordinators as it
/// needs, each on a data source of its own (a separate connection pool, as separate processes would have) and with its
/// own application_name, so a test can end exactly one coordinator's connections.
/// </summary>
public sealed class PostgresScope(PostgresServer server) : IAsyncDisposable
{
    /// <summary>How long a test waits for something that must happen; a hang fails instead of blocking the run.</summary>
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    private static int s_coordinators;

    private readonly List<IAsyncDisposable> _owned = [];

    // Not pooled: a pooled connection would not survive the tests that restart the server.
    private NpgsqlDataSource? _admin;

    public PostgresServer Server => server;

    /// <summary>This test's schema.</summary>
    public string Schema { get; } = "t_" + Guid.NewGuid().ToString("N")[..16];

    /// <summary>A data source for the test's own queries (assertions on the tables).</summary>
    public NpgsqlDataSource Admin => _admin ??= server.CreateDataSource(b =>
    {
        b.ApplicationName = "test-admin";
        b.Pooling = false;
    });

    /// <summary>
    /// A new coordinator on a data source of its own, with the schema installed. Its connections carry
    /// <c>application_name</c> = the returned <see cref="Member.Application"/>; <paramref name="port"/> connects it
    /// through a <see cref="TcpProxy"/>; <paramref name="connection"/> sets more of the data source's connection string.
    /// </summary>
    public async Task<Member> JoinAsync(
        Action<PostgresCoordinatorOptions>? configure = null, int? port = null, bool ensureSchema = true,
        Action<NpgsqlConnectionStringBuilder>? connection = null)
    {
        string application = $"coordinator-{Interlocked.Increment(ref s_coordinators)}";
        NpgsqlDataSource source = server.CreateDataSource(b =>
        {
            b.ApplicationName = application;
            if (port is int p)
            {
                b.Host = "127.0.0.1";
                b.Port = p;
                b.Timeout = 3;
                b.CancellationTimeout = 1000;
            }

            connection?.Invoke(b);
        });
        _owned.Add(source);
        var options = new PostgresCoordinatorOptions { Schema = Schema };
        configure?.Invoke(options);
        var coordinator = new PostgresCoordinator(source, options);
        _owned.Add(coordinator);
        if (ensureSchema)
        {
            await coordinator.EnsureSchemaAsync();
        }

        return new Member(coordinator, source, application);
    }

    /// <summary>Runs a scalar query on the admin connection; <c>@schema</c> stands for this test's schema.</summary>
    public async Task<T> ScalarAsync<T>(string sql)
    {
        await using NpgsqlCommand command = Admin.CreateCommand(WithSchema(sql));
        return (T)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>Runs a statement of the test's own in <paramref name="transaction"/> (one that plays a step of the
    /// schema's functions, or an application's); <c>@schema</c> stands for this test's schema.</summary>
    public async Task ExecuteAsync(NpgsqlTransaction transaction, string sql)
    {
        await using var command = new NpgsqlCommand(WithSchema(sql), transaction.Connection, transaction);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>
    /// Starts <paramref name="call"/> while a transaction here holds what <paramref name="holdSql"/> locks (<c>@schema</c>
    /// stands for this test's schema); once a backend of <paramref name="member"/> waits for it, runs
    /// <paramref name="whileWaiting"/>, then commits. Returns the call, which goes on from there.
    /// </summary>
    public async Task<Task<T>> CallHeldAtTheServerAsync<T>(string holdSql, Member member, Func<Task<T>> call, Action whileWaiting)
    {
        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(hold, holdSql);
        Task<T> started = call();
        await WaitsForALockAsync(member, "the call waits for what the transaction holds");
        whileWaiting();
        await hold.CommitAsync();
        return started;
    }

    /// <summary>
    /// As <see cref="CallHeldAtTheServerAsync{T}"/>, with steps of its own while the call waits: once a backend of
    /// <paramref name="member"/> waits for what <paramref name="holdSql"/> locks, runs <paramref name="whileWaiting"/>
    /// (given the call), then commits. Returns the call.
    /// </summary>
    public async Task<Task> CallHeldAtTheServerAsync(string holdSql, Member member, Func<Task> call, Func<Task, Task> whileWaiting)
    {
        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(hold, holdSql);
        Task started = call();
        await WaitsForALockAsync(member, "the call waits for what the transaction holds");
        await whileWaiting(started);
        await hold.CommitAsync();
        return started;
    }

    /// <summary>Waits (bounded) until <paramref name="count"/> backends of <paramref name="member"/> wait for a lock.</summary>
    public Task WaitsForALockAsync(Member member, string because, int count = 1) =>
        WaitsForALockAsync($"application_name = '{member.Application}'", because, count);

    /// <summary>Waits (bounded) until the backend <paramref name="pid"/> waits for a lock.</summary>
    public Task WaitsForALockAsync(int pid, string because) => WaitsForALockAsync($"pid = {pid}", because);

    private Task WaitsForALockAsync(string backend, string because, int count = 1) => EventuallyAsync(
        async () => await ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE {backend} AND wait_event_type = 'Lock'") == count,
        because);

    private string WithSchema(string sql) => sql.Replace("@schema", $"\"{Schema}\"", StringComparison.Ordinal);

    /// <summary>Ends every server backend of <paramref name="member"/> (its LISTEN connection and its pooled ones),
    /// as an administrator's pg_terminate_backend would; returns how many were ended.</summary>
    public Task<long> TerminateAsync(Member member) => ScalarAsync<long>(
        $"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{member.Application}'");

    /// <summary>Waits (bounded) until <paramref name="condition"/> holds, checking it every few milliseconds.</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, string because)
    {
        DateTime deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("Timed out waiting until " + because);
            }

            await Task.Delay(10);
        }
    }

    /// <summary>Waits (bounded) until <paramref name="count"/> waiters stand in the wait lines of this schema.</summary>
    public Task WaitersAsync(long count) =>
        EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.permit_waiters") == count, $"{count} waiters are in line");

    /// <summary>
    /// As <see cref="WaitersAsync(long)"/>, where the last of them is <paramref name="wait"/>: if it ends before the
    /// count is reached, its own failure is thrown (or, if it succeeded, that it did not wait), not a time-out.
    /// </summary>
    public Task WaitersAsync(long count, Task wait) => EventuallyAsync(
        async () =>
        {
            if (wait.IsCompleted)
            {
                await wait;
                throw new InvalidOperationException($"The wait ended before it was in line ({count} waiters expected).");
            }

            return await ScalarAsync<long>("SELECT count(*) FROM @schema.permit_waiters") == count;
        },
        $"{count} waiters are in line");

    /// <summary>Rows left in the lock and semaphore tables (holders, waiters).</summary>
    public async Task<(long Holders, long Waiters)> PermitRowsAsync() =>
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL"),
         await ScalarAsync<long>("SELECT count(*) FROM @schema.permit_waiters"));

    public async ValueTask DisposeAsync()
    {
        // Coordinators before their data sources, newest first.
        for (int i = _owned.Count - 1; i >= 0; i--)
        {
            await _owned[i].DisposeAsync();
        }

        if (_admin is not null)
        {
            await using (NpgsqlCommand drop = _admin.CreateCommand($"DROP SCHEMA IF EXISTS \"{Schema}\" CASCADE"))
            {
                await drop.ExecuteNonQueryAsync();
            }

            await _admin.DisposeAsync();
        }
    }
}

/// <summary>A coordinator of a test, with the data source it runs on and the application_name of its connections.</summary>
public sealed record Member(PostgresCoordinator Coordinator, NpgsqlDataSource Source, string Application);
