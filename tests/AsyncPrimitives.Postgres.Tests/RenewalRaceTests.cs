using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// The heartbeat's renewal and a batch completion (or a release, or the end of the session) can reach the same rows at
/// the same moment. Each must lock them in one order (items by their ids, permit sets by taking their turns first), or
/// the two wait for each other in a cycle: the server breaks such a deadlock by failing one of them, so the completion
/// would throw (and its items come back after their lease) or the renewal would be lost for a beat. The renewal is sent here as the heartbeat sends it, on a connection of its own, so that the
/// race is started at a known moment rather than at the heartbeat's next beat.
/// </summary>
public sealed class RenewalRaceTests(PostgresServer server) : PostgresTest(server)
{
    private const int Items = 1_000;

    [PostgresFact]
    public async Task BatchCompletion_RacingTheRenewalOfTheSameDeliveries_NeitherFails()
    {
        Member member = await JoinAsync();
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("renewal-race");
        Session session = await member.Coordinator.GetSessionAsync(CancellationToken.None);
        await using NpgsqlConnection renewer = await OpenReadCommittedAsync(member.Source);

        for (int round = 0; round < 5; round++)
        {
            await queue.PutManyAsync(Enumerable.Range(0, Items));
            IReadOnlyList<PostgresDelivery<int>> deliveries = await queue.GetManyAsync(Items, Bound);
            deliveries.Should().HaveCount(Items);

            // Opposite orders on the two sides: a statement that locks rows in the order it is given them meets the
            // other one in the middle.
            PostgresDelivery<int>[] ascending = [.. deliveries.OrderBy(d => d.Id)];
            PostgresDelivery<int>[] descending = [.. ascending.Reverse()];
            var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Task renewal = Task.Run(async () =>
            {
                await start.Task;
                await RenewDeliveriesAsync(renewer, member.Coordinator.Owner, session.Key, ascending, TimeSpan.FromSeconds(30));
            });
            Task completion = Task.Run(async () =>
            {
                await start.Task;
                await queue.CompleteManyAsync(descending);
            });
            start.SetResult();

            // A deadlock fails one of the two (40P01): the completion with a PostgresCoordinationException, the renewal
            // with a PostgresException.
            await completion.WaitAsync(Bound);
            await renewal.WaitAsync(Bound);
            (await queue.UnfinishedAsync()).Should().Be(0, $"round {round}: every item was completed");
        }
    }

    [PostgresFact]
    public async Task ARelease_GrantingToAWaiterOfTheRenewingCoordinator_AndTheRenewal_NeitherFails()
    {
        // One coordinator holds the semaphore's permit and waits for another. Its release locks the permit's slot, then
        // the place in line it grants the permit to; the renewal of both touches the same two rows. The release is played
        // here row by row, as permit_release runs it (the set's turn, the slot, then the place), around a renewal sent
        // as the heartbeat sends it.
        Member member = await JoinAsync();
        PostgresSemaphore semaphore = member.Coordinator.CreateSemaphore("renewed", 1);
        PostgresLease lease = await semaphore.AcquireAsync(Bound);
        Task<PostgresLease> waiting = semaphore.AcquireAsync(Bound).AsTask();
        await WaitersAsync(1);
        long ticket = await ScalarAsync<long>("SELECT ticket FROM @schema.permit_waiters");
        Session session = await member.Coordinator.GetSessionAsync(CancellationToken.None);

        // Opened first, so disposed last: a failing test ends the release (rolls it back) before it closes the renewal.
        await using NpgsqlConnection renewer = await OpenReadCommittedAsync(member.Source);
        int renewerPid = await PidAsync(renewer);

        await using NpgsqlConnection releaser = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction release = await releaser.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(release, "SELECT @schema.permit_turn('s', 'renewed')");
        await ExecuteAsync(release, $"UPDATE @schema.permit_slots SET token = token WHERE token = {lease.FencingToken}");

        Task renewal = RenewPermitsAsync(renewer, member.Coordinator.Owner, session.Key, lease.FencingToken, ticket);
        await WaitsForALockAsync(renewerPid, "the renewal waits for the release");

        // The release goes on to the place in line it grants the permit to, then ends (undone: the real release follows).
        await ExecuteAsync(release, $"DELETE FROM @schema.permit_waiters WHERE ticket = {ticket}");
        await release.RollbackAsync();

        await renewal.WaitAsync(Bound); // a deadlock would fail one of the two (40P01): the one that waited first, this one
        await lease.DisposeAsync();
        await (await waiting.WaitAsync(Bound)).DisposeAsync();
    }

    [PostgresFact]
    public async Task EndingTheSession_WhileTheHeartbeatRenewsAPermitAndAPlace_NeitherFails()
    {
        // A coordinator that closes ends its session (end_session) while the heartbeat's last renewal may still run.
        // The renewal locks the place in line, then the permit; ending the session frees what the session holds across
        // every set. The renewal is played here row by row, as renew runs it (the set's turn, the place, then the
        // permit), around an end_session sent as the coordinator sends it.
        Member member = await JoinAsync();
        PostgresLease lease = await member.Coordinator.CreateSemaphore("renewed", 1).AcquireAsync(Bound);
        Session session = await member.Coordinator.GetSessionAsync(CancellationToken.None);

        // A place in line of the session, as a second acquire would have taken it (written here, so that no wait of
        // the coordinator's comes back for it once the session's rows are gone).
        long ticket = await ScalarAsync<long>(
            "INSERT INTO @schema.permit_waiters (ticket, kind, name, owner, session, lease, expires_at) " +
            $"VALUES (nextval('@schema.ids'), 's', 'renewed', '{member.Coordinator.Owner}', {session.Key}, '30 s', now() + interval '30 s') " +
            "RETURNING ticket");

        // Opened first, so disposed last: a failing test ends the renewal (rolls it back) before it closes the other.
        await using NpgsqlConnection ender = await OpenReadCommittedAsync(member.Source);
        int enderPid = await PidAsync(ender);

        await using NpgsqlConnection renewer = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction renewal = await renewer.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(renewal, "SELECT @schema.permit_turn('s', 'renewed')");
        await ExecuteAsync(renewal, $"UPDATE @schema.permit_waiters SET expires_at = expires_at WHERE ticket = {ticket}");

        Task ending = EndSessionAsync(ender, member.Coordinator.Owner, session.Key);
        await WaitsForALockAsync(enderPid, "ending the session waits for the renewal");

        // The renewal goes on to the permit, then commits. A deadlock would fail one of the two (40P01).
        await ExecuteAsync(renewal, $"UPDATE @schema.permit_slots SET expires_at = expires_at WHERE token = {lease.FencingToken}");
        await renewal.CommitAsync();
        await ending.WaitAsync(Bound);

        (await PermitRowsAsync()).Should().Be((0L, 0L), "the session's permit and its place in line are given back");
        await lease.DisposeAsync();
    }

    /// <summary>The coordinator's call when it closes (<c>end_session</c>).</summary>
    private async Task EndSessionAsync(NpgsqlConnection connection, Guid owner, long session)
    {
        await using NpgsqlCommand end = new($"SELECT \"{Schema}\".end_session($1, $2)", connection);
        end.Parameters.Add(new NpgsqlParameter { Value = owner });
        end.Parameters.Add(new NpgsqlParameter { Value = session });
        await end.ExecuteNonQueryAsync();
    }

    /// <summary>A connection whose statements run at READ COMMITTED, as the coordinator's do whatever the server's
    /// default (the suite also runs against a server whose default is SERIALIZABLE).</summary>
    private static async Task<NpgsqlConnection> OpenReadCommittedAsync(NpgsqlDataSource source)
    {
        NpgsqlConnection connection = await source.OpenConnectionAsync();
        await using var set = new NpgsqlCommand("SET default_transaction_isolation = 'read committed'", connection);
        await set.ExecuteNonQueryAsync();
        return connection;
    }

    private static async Task<int> PidAsync(NpgsqlConnection connection)
    {
        await using var pid = new NpgsqlCommand("SELECT pg_backend_pid()", connection);
        return (int)(await pid.ExecuteScalarAsync())!;
    }

    /// <summary>The heartbeat's call (<c>renew</c>) for one permit of the semaphore <c>renewed</c> and one place in line.</summary>
    private async Task RenewPermitsAsync(NpgsqlConnection connection, Guid owner, long session, long token, long ticket)
    {
        await using NpgsqlCommand renew = new(
            $"SELECT \"{Schema}\".renew($1, $2, ARRAY['s']::\"char\"[], ARRAY['renewed'], $3, $4, $5, '{{}}'::bigint[], '{{}}'::bigint[])",
            connection);
        renew.Parameters.Add(new NpgsqlParameter { Value = owner });
        renew.Parameters.Add(new NpgsqlParameter { Value = session });
        renew.Parameters.Add(new NpgsqlParameter { Value = new[] { token } });
        renew.Parameters.Add(new NpgsqlParameter { Value = new[] { ticket } });
        renew.Parameters.Add(new NpgsqlParameter { Value = TimeSpan.FromSeconds(30) });
        await renew.ExecuteNonQueryAsync();
    }
}
