using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A put, a completion or a give-back whose token is cancelled once its statement has reached the server runs to its
/// answer: "a cancelled put did not enqueue the item", "a cancelled completion did not happen" stay true. Played with
/// the statement held at the server by a lock, its answer held by the proxy once it has run, and the token cancelled
/// then. The connections cancel without waiting for the server (<c>Cancellation Timeout=-1</c>), so a call that still
/// handed its token to the statement would fail at once with the item already enqueued or completed.
/// </summary>
public sealed class CancelledCallTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task APut_CancelledAfterItRan_RunsToItsAnswer()
    {
        await using TcpProxy proxy = NewProxy();
        Member member = await JoinThroughAsync(proxy);
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("cancelled-put");
        (await queue.CountAsync()).Should().Be(0);

        await CancelAfterItRanAsync(
            proxy,
            member,
            "LOCK TABLE @schema.queue_items IN SHARE MODE",
            token => queue.PutAsync(42, cancellationToken: token).AsTask(),
            async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_items") == 1);

        (await queue.CountAsync()).Should().Be(1);
    }

    [PostgresFact]
    public async Task ACompletion_CancelledAfterItRan_RunsToItsAnswer()
    {
        await using TcpProxy proxy = NewProxy();
        (Member member, PostgresQueue<int> queue, PostgresDelivery<int> delivery) = await DeliveredThroughAsync(proxy, "cancelled-completion");

        await CancelAfterItRanAsync(
            proxy, member, RowLock(delivery), token => delivery.CompleteAsync(token).AsTask(),
            async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_items") == 0);

        (await queue.UnfinishedAsync()).Should().Be(0);
        await delivery.CompleteAsync(); // idempotent: it was completed
    }

    [PostgresFact]
    public async Task AnAbandonment_CancelledAfterItRan_RunsToItsAnswer()
    {
        await using TcpProxy proxy = NewProxy();
        (Member member, PostgresQueue<int> queue, PostgresDelivery<int> delivery) = await DeliveredThroughAsync(proxy, "cancelled-abandon");

        await CancelAfterItRanAsync(
            proxy, member, RowLock(delivery), token => delivery.AbandonAsync(token).AsTask(),
            async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_items WHERE lease_token IS NULL") == 1);

        await FluentActions.Awaiting(async () => await delivery.CompleteAsync())
            .Should().ThrowAsync<InvalidOperationException>("the delivery was abandoned");
        (await queue.GetAsync(Bound)).Attempt.Should().Be(2);
    }

    /// <summary>A member joined through <paramref name="proxy"/>, and a delivery of a queue of its own.</summary>
    private async Task<(Member Member, PostgresQueue<int> Queue, PostgresDelivery<int> Delivery)> DeliveredThroughAsync(TcpProxy proxy, string name)
    {
        Member member = await JoinThroughAsync(proxy);
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>(name);
        await queue.PutAsync(1);
        return (member, queue, await queue.GetAsync(Bound));
    }

    /// <summary>What a statement on <paramref name="delivery"/>'s item waits for while a transaction here holds it.</summary>
    private static string RowLock(PostgresDelivery<int> delivery) => $"SELECT 1 FROM @schema.queue_items WHERE id = {delivery.Id} FOR UPDATE";

    private TcpProxy NewProxy() => new("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);

    private Task<Member> JoinThroughAsync(TcpProxy proxy) => JoinAsync(
        o => o.TimeProvider = new CountingTimeProvider(), // no heartbeat meanwhile
        port: proxy.Port,
        connection: b => b.CancellationTimeout = -1);

    /// <summary>
    /// Starts <paramref name="call"/> while a transaction here holds what its statement needs (<paramref name="block"/>),
    /// holds the statement's answer once it runs, lets it run, waits until <paramref name="ran"/>, cancels the call's
    /// token, then lets the answer through: the call must complete as if never cancelled.
    /// </summary>
    private async Task CancelAfterItRanAsync(
        TcpProxy proxy, Member member, string block, Func<CancellationToken, Task> call, Func<Task<bool>> ran)
    {
        using var cancel = new CancellationTokenSource();
        Task calling;
        int port;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction holding = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(holding, block);
            calling = call(cancel.Token);
            await WaitsForALockAsync(member, "the call's statement waits at the server");
            port = await ScalarAsync<int>(
                $"SELECT client_port FROM pg_stat_activity WHERE application_name = '{member.Application}' AND wait_event_type = 'Lock'");
            proxy.HoldReplies(port);
            await holding.CommitAsync();
        }

        await EventuallyAsync(ran, "the statement ran");
        cancel.Cancel();
        proxy.ReleaseReplies(port);
        await calling.WaitAsync(Bound);
    }

    public static TheoryData<string> WaitingCalls => new() { "lock", "semaphore-try", "get", "join" };

    /// <summary>
    /// A wait cancelled while its call waits for a pooled connection (the pool is full) ends at once, and is granted
    /// nothing when a connection frees up later: its statement was never sent.
    /// </summary>
    [PostgresTheory, MemberData(nameof(WaitingCalls))]
    public async Task AWait_CancelledBeforeItsCallReachedTheServer_EndsAtOnce_AndTakesNothing(string call)
    {
        Member member = await JoinAsync(connection: b =>
        {
            b.MaxPoolSize = 2;
            b.Timeout = 120; // a call waiting for a pooled connection would give up only after this
        });
        Member producer = await JoinAsync();
        await producer.Coordinator.CreateQueue<int>("full-pool").PutAsync(1); // something for a get to take
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("full-pool");
        await member.Coordinator.GetSessionAsync(CancellationToken.None); // the LISTEN connection: 1 of 2
        NpgsqlConnection busy = await member.Source.OpenConnectionAsync(); // 2 of 2, and no call has kept one
        using var cancel = new CancellationTokenSource();
        Task waiting = call switch
        {
            "lock" => member.Coordinator.CreateLock("job").AcquireAsync(cancel.Token).AsTask(),
            "semaphore-try" => member.Coordinator.CreateSemaphore("api", 2).TryAcquireAsync(cancel.Token).AsTask(),
            "get" => queue.GetAsync(cancel.Token).AsTask(),
            "join" => queue.JoinAsync(cancel.Token).AsTask(),
            _ => throw new ArgumentOutOfRangeException(nameof(call)),
        };
        cancel.Cancel();

        await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>(
            "the token ends the wait for a connection (a TimeoutException here means the call waited on)");
        await busy.DisposeAsync();
        (await PermitRowsAsync()).Should().Be((0L, 0L));
        (await queue.CountAsync()).Should().Be(1, "the get took nothing");
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins")).Should().Be(0);
    }
}
