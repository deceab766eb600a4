using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A session that ends here while the server may still take it for a live one (its LISTEN connection stopped
/// answering: the backend, and the session's lock, stay): a wait woken meanwhile makes no call under it, and whatever a
/// call in flight was granted under it is given back, so no permit or item is left held by no one.
/// </summary>
public sealed class EndedSessionTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>An item type whose constructor validates its argument with <see cref="InvalidOperationException"/>
    /// (a guard style some domain types use): System.Text.Json itself can read it.</summary>
    public sealed class GuardedOrder
    {
        public GuardedOrder(string id) => Id = string.IsNullOrEmpty(id) ? throw new InvalidOperationException("An order needs an id.") : id;

        public string Id { get; }
    }

    /// <summary>
    /// CHANGELOG: "CreateQueue refused such types, whose constructor throws on the empty document it reads to check T;
    /// only System.Text.Json's own refusals count now". The probe tells them apart by the exception's type only, so a
    /// type whose own constructor throws InvalidOperationException (or NotSupportedException) is still refused, though
    /// System.Text.Json reads and writes it.
    /// </summary>
    [PostgresFact]
    public async Task CreateQueue_AcceptsATypeWhoseOwnConstructorThrowsInvalidOperationException()
    {
        System.Text.Json.JsonSerializer.Deserialize<GuardedOrder>("{\"Id\":\"a\"}")!.Id.Should().Be("a", "System.Text.Json reads the type");
        Member member = await JoinAsync();
        PostgresQueue<GuardedOrder>? queue = null;
        FluentActions.Invoking(() => queue = member.Coordinator.CreateQueue<GuardedOrder>("orders"))
            .Should().NotThrow("the type is readable; only the probe's empty document does not satisfy its constructor");
        await queue!.PutAsync(new GuardedOrder("a"));
        await using PostgresDelivery<GuardedOrder> delivery = await queue.GetAsync(Bound);
        delivery.Item.Id.Should().Be("a");
        await delivery.CompleteAsync();
    }

    /// <summary>
    /// The same without holding anything at the server: the session holds a permit of the semaphore its wait waits
    /// for, so ending the session here wakes the wait at once (the lost lease's key is signalled), and its call races
    /// end_session. Whenever end_session goes first, the call is granted the permit just freed, under the dead
    /// session. Tried a few times; any permit or place left to the failed wait's dead session fails the test.
    /// </summary>
    [PostgresFact]
    public async Task AWaitWokenByItsOwnLostLease_WhenTheListenConnectionStopsAnswering_TakesNoPermitForTheDeadSession()
    {
        Member holder = await JoinAsync();
        PostgresLease held = await holder.Coordinator.CreateSemaphore("race", 2).AcquireAsync(Bound);
        var leaks = new List<string>();
        for (int round = 0; round < 10 && leaks.Count == 0; round++)
        {
            await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
            Member cut = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(3), port: proxy.Port);
            PostgresSemaphore semaphore = cut.Coordinator.CreateSemaphore("race", 2);
            PostgresLease cutHeld = await semaphore.AcquireAsync(Bound);
            Task<PostgresLease> waiting = semaphore.AcquireAsync().AsTask();
            await WaitersAsync(1);
            Session session = await cut.Coordinator.GetSessionAsync(CancellationToken.None);
            int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");
            proxy.HoldReplies(listenPort);
            try
            {
                await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
                long ghost = await ScalarAsync<long>(
                    $"SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND owner = '{cut.Coordinator.Owner}'");
                long places = await ScalarAsync<long>(
                    $"SELECT count(*) FROM @schema.permit_waiters WHERE owner = '{cut.Coordinator.Owner}'");
                if (ghost + places > 0)
                {
                    long token = await ScalarAsync<long>(
                        $"SELECT coalesce(max(token), 0) FROM @schema.permit_slots WHERE token IS NOT NULL AND owner = '{cut.Coordinator.Owner}'");
                    leaks.Add($"round {round}: permits {ghost} (token {token}; the permit the session held: {cutHeld.FencingToken}), places {places}");
                }
            }
            finally
            {
                proxy.ReleaseReplies(listenPort);
                _ = cutHeld;
                await cut.Coordinator.DisposeAsync();
            }
        }

        await held.ReleaseAsync();
        leaks.Should().BeEmpty("a failed wait holds nothing on the server");
    }

    /// <summary>
    /// The queue form: the session holds a delivery of the queue a get of its waits on. Ending the session here wakes
    /// the get (the lost delivery's key is signalled); when end_session has given the item back first, the get takes it
    /// again under the dead session (its backend still holds the session's lock), then throws: the item stays leased to
    /// no one until its lease expires, and another process's TryGetAsync finds the queue empty.
    /// </summary>
    [PostgresFact]
    public async Task AGetWokenByItsOwnLostDelivery_WhenTheListenConnectionStopsAnswering_LeavesNoItemLeasedToTheDeadSession()
    {
        Member other = await JoinAsync();
        var leaks = new List<string>();
        for (int round = 0; round < 10 && leaks.Count == 0; round++)
        {
            await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
            Member cut = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(3), port: proxy.Port);
            string name = $"jobs{round}";
            PostgresQueue<int> queue = cut.Coordinator.CreateQueue<int>(name);
            await queue.PutAsync(round);
            PostgresDelivery<int> delivery = await queue.GetAsync(Bound);
            Task<PostgresDelivery<int>> getting = queue.GetAsync().AsTask();
            Session session = await cut.Coordinator.GetSessionAsync(CancellationToken.None);
            int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");
            proxy.HoldReplies(listenPort);
            try
            {
                await FluentActions.Awaiting(() => getting.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
                long leased = await ScalarAsync<long>(
                    $"SELECT count(*) FROM @schema.queue_items WHERE lease_owner = '{cut.Coordinator.Owner}'");
                if (leased > 0)
                {
                    int attempts = await ScalarAsync<int>(
                        $"SELECT max(attempts) FROM @schema.queue_items WHERE lease_owner = '{cut.Coordinator.Owner}'");
                    await using PostgresDelivery<int>? found = await other.Coordinator.CreateQueue<int>(name).TryGetAsync();
                    leaks.Add($"round {round}: items leased to the dead session {leased} (attempt {attempts}); another process's TryGetAsync: {(found is null ? "nothing" : "the item")}");
                }
            }
            finally
            {
                proxy.ReleaseReplies(listenPort);
                _ = delivery;
                await cut.Coordinator.DisposeAsync();
            }
        }

        leaks.Should().BeEmpty("a failed get leaves nothing leased");
    }
}
