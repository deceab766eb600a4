using Npgsql;

namespace AsyncPrimitives.Postgres.Tests.Support;

/// <summary>Base of the tests against the server: each test works in a <see cref="PostgresScope"/> of its own.</summary>
[Collection(PostgresCollection.Name)]
public abstract class PostgresTest(PostgresServer server) : IAsyncLifetime
{
    /// <summary>How long a test waits for something that must happen.</summary>
    protected static readonly TimeSpan Bound = PostgresScope.Bound;

    protected PostgresScope Scope { get; } = new(server);

    protected PostgresServer Server => server;

    protected string Schema => Scope.Schema;

    protected NpgsqlDataSource Admin => Scope.Admin;

    public virtual Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await Scope.DisposeAsync();

    protected Task<Member> JoinAsync(
        Action<PostgresCoordinatorOptions>? configure = null, int? port = null, bool ensureSchema = true,
        Action<NpgsqlConnectionStringBuilder>? connection = null) =>
        Scope.JoinAsync(configure, port, ensureSchema, connection);

    protected Task<T> ScalarAsync<T>(string sql) => Scope.ScalarAsync<T>(sql);

    protected Task ExecuteAsync(NpgsqlTransaction transaction, string sql) => Scope.ExecuteAsync(transaction, sql);

    protected Task WaitsForALockAsync(Member member, string because, int count = 1) => Scope.WaitsForALockAsync(member, because, count);

    protected Task<Task<T>> CallHeldAtTheServerAsync<T>(string holdSql, Member member, Func<Task<T>> call, Action whileWaiting) =>
        Scope.CallHeldAtTheServerAsync(holdSql, member, call, whileWaiting);

    protected Task<Task> CallHeldAtTheServerAsync(string holdSql, Member member, Func<Task> call, Func<Task, Task> whileWaiting) =>
        Scope.CallHeldAtTheServerAsync(holdSql, member, call, whileWaiting);

    protected Task WaitsForALockAsync(int pid, string because) => Scope.WaitsForALockAsync(pid, because);

    protected Task<long> TerminateAsync(Member member) => Scope.TerminateAsync(member);

    protected static Task EventuallyAsync(Func<Task<bool>> condition, string because) => PostgresScope.EventuallyAsync(condition, because);

    protected Task WaitersAsync(long count) => Scope.WaitersAsync(count);
    protected Task WaitersAsync(long count, Task wait) => Scope.WaitersAsync(count, wait);

    protected Task<(long Holders, long Waiters)> PermitRowsAsync() => Scope.PermitRowsAsync();

    /// <summary>Ends the leases of every queue item, or of the item <paramref name="id"/>, at the server's present moment
    /// (<c>clock_timestamp()</c>, later than the start of any statement waiting meanwhile), as time passing would.</summary>
    protected Task ExpireLeasesNowAsync(long? id = null) => ScalarAsync<int>(
        "UPDATE @schema.queue_items SET leased_until = clock_timestamp()" + (id is long one ? $" WHERE id = {one}" : "") + "; SELECT 1").WaitAsync(Bound);

    /// <summary>Ends, at the server's present moment, the rows of <paramref name="table"/> (<c>permit_slots</c>: permits;
    /// <c>permit_waiters</c>: places in line) where <paramref name="condition"/> holds.</summary>
    protected Task ExpirePermitRowsNowAsync(string table, string condition) => ScalarAsync<int>(
        $"UPDATE @schema.{table} SET expires_at = clock_timestamp() WHERE {condition}; SELECT 1").WaitAsync(Bound);

    /// <summary>In <paramref name="hold"/>, takes the dead-letter key of item <paramref name="id"/> (a row under another
    /// queue, not committed): a move of that item to the dead letters waits for <paramref name="hold"/> to end.</summary>
    protected Task HoldDeadLetterKeyAsync(NpgsqlTransaction hold, long id) => ExecuteAsync(hold,
        "INSERT INTO @schema.queue_dead_letters (id, queue, priority, payload, enqueued_at, attempts, reason) " +
        $"VALUES ({id}, 'elsewhere', 0, '0', now(), 1, 'held')");

    /// <summary>Sends the heartbeat's call (<c>renew</c>) for <paramref name="deliveries"/> only, on
    /// <paramref name="connection"/>, as the coordinator <paramref name="owner"/> in its session <paramref name="session"/>
    /// would, with a lease of <paramref name="lease"/>.</summary>
    protected async Task RenewDeliveriesAsync(
        NpgsqlConnection connection, Guid owner, long session, PostgresDelivery<int>[] deliveries, TimeSpan lease)
    {
        await using NpgsqlCommand renew = new(
            $"SELECT \"{Schema}\".renew($1, $2, '{{}}'::\"char\"[], '{{}}'::text[], '{{}}'::bigint[], '{{}}'::bigint[], $3, $4, $5)",
            connection);
        renew.Parameters.Add(new NpgsqlParameter { Value = owner });
        renew.Parameters.Add(new NpgsqlParameter { Value = session });
        renew.Parameters.Add(new NpgsqlParameter { Value = lease });
        renew.Parameters.Add(new NpgsqlParameter { Value = deliveries.Select(d => d.Id).ToArray() });
        renew.Parameters.Add(new NpgsqlParameter { Value = deliveries.Select(d => d.Tracker.Id).ToArray() });
        await renew.ExecuteNonQueryAsync();
    }

    /// <summary>Waits (at most <see cref="Bound"/>) until <paramref name="lost"/>, a lease's or a delivery's <c>Lost</c>, fires.</summary>
    protected static async Task WaitForLostAsync(CancellationToken lost)
    {
        var fired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using CancellationTokenRegistration registration = lost.Register(() => fired.TrySetResult());
        await fired.Task.WaitAsync(Bound);
    }

    /// <summary>Moves <paramref name="time"/> (the coordinator's clock) on, a second at a time, until
    /// <paramref name="lost"/> fires: the heartbeat has found the lease gone.</summary>
    protected static Task AdvanceUntilLostAsync(AsyncTools.Testing.CountingTimeProvider time, CancellationToken lost) => EventuallyAsync(
        () =>
        {
            time.Advance(TimeSpan.FromSeconds(1));
            return Task.FromResult(lost.IsCancellationRequested);
        },
        "the heartbeat finds the lease gone");

    /// <summary>Moves <paramref name="time"/> (the clock of <paramref name="member"/>, whose heartbeat beats on it) on, a
    /// second at a time, until a backend of <paramref name="member"/> waits for a lock: its renewal, held up by what the
    /// test holds.</summary>
    protected Task BeatUntilTheRenewalWaitsAsync(Member member, AsyncTools.Testing.CountingTimeProvider time, string because) => EventuallyAsync(
        async () =>
        {
            time.Advance(TimeSpan.FromSeconds(1));
            return await ScalarAsync<long>(
                $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{member.Application}' AND wait_event_type = 'Lock'") == 1;
        },
        because);

    /// <summary>Holds what <paramref name="holdSql"/> locks in a transaction of its own, moves <paramref name="time"/> on
    /// until the heartbeat's renewal of <paramref name="member"/> waits for it (see
    /// <see cref="BeatUntilTheRenewalWaitsAsync"/>), runs <paramref name="whileWaiting"/>, then commits: the renewal
    /// runs after that.</summary>
    protected async Task RenewalHeldAtTheServerAsync(
        string holdSql, Member member, AsyncTools.Testing.CountingTimeProvider time, string because, Func<Task> whileWaiting)
    {
        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(hold, holdSql);
        await BeatUntilTheRenewalWaitsAsync(member, time, because);
        await whileWaiting();
        await hold.CommitAsync();
    }
}
