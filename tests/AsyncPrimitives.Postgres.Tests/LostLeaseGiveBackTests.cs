using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A lease lost here by its deadline is given back on the server in the background: promptly to the others, never under
/// a completion in flight, and never after its coordinator's <c>DisposeAsync</c> has returned.
/// </summary>
public sealed class LostLeaseGiveBackTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// A batch completion is sent well before the leases' local deadline, and is held at the server by the first item's
    /// row (a transaction of the application's, say). The deadline passes while it is in flight: its answer decides,
    /// as it does for a renewal. The server's leases have not expired, so once it runs it completes both items (a
    /// give-back sent meanwhile would abandon the second under its feet).
    /// </summary>
    [PostgresFact]
    public async Task ACompleteManyInFlightWhenTheDeadlineFires_IsNotUndoneByTheBackgroundGiveBack()
    {
        var time = new CountingTimeProvider();
        var options = new PostgresQueueOptions { LeaseDuration = TimeSpan.FromSeconds(10) }; // margin 1 s
        Member consumer = await JoinAsync(o => o.TimeProvider = time);
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("in-flight", options);
        await queue.PutManyAsync([1, 2]);
        IReadOnlyList<PostgresDelivery<int>> deliveries = await queue.GetManyAsync(2, TimeSpan.Zero);
        deliveries.Should().HaveCount(2);
        long first = deliveries.Min(d => d.Id);

        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {first} FOR UPDATE");
        Task completing = queue.CompleteManyAsync(deliveries).AsTask();
        await WaitsForALockAsync(consumer, "the completion waits at the server for the first item's row");

        // The local deadline passes (10 s less the 1 s margin) while the completion is in flight; on the server the
        // leases have nearly all of their 10 s left (real time).
        time.Advance(TimeSpan.FromSeconds(9.5));
        await WaitForLostAsync(deliveries[0].Lost);
        await WaitForLostAsync(deliveries[1].Lost);
        await EventuallyAsync(
            async () => await ScalarAsync<long>(
                $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{consumer.Application}' " +
                "AND state = 'active' AND wait_event_type IS DISTINCT FROM 'Lock'") == 0,
            "what the coordinator sent that is not waiting for the row has run");
        await hold.CommitAsync();

        Exception? failure = null;
        try
        {
            await completing.WaitAsync(Bound);
        }
        catch (PostgresLeaseLostException e)
        {
            failure = e;
        }

        long left = await ScalarAsync<long>($"SELECT count(*) FROM @schema.queue_items WHERE queue = 'in-flight'");
        (failure?.Message, left).Should().Be(
            ((string?)null, 0L),
            "(the completion's failure, items left): the completion was sent before the deadline and ran while the " +
            "server still held both leases for this consumer");
    }

    /// <summary>
    /// A give-back whose answer is late when the coordinator is disposed: <c>DisposeAsync</c> stops it and waits for it,
    /// so with the documented order (the coordinator, then its data source) nothing of it runs on the disposed data
    /// source afterwards (its wake-up would start the notifier's drain there, failing in the background).
    /// </summary>
    [PostgresFact]
    public async Task AGiveBackAnsweredAfterTheCoordinatorAndItsDataSourceAreDisposed_FailsNothingInTheBackground()
    {
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        (Member consumer, int givingBackPort) = await GiveBackWithItsAnswerHeldAsync(proxy);

        // The documented order: the coordinator, then its data source.
        await consumer.Coordinator.DisposeAsync();
        await consumer.Source.DisposeAsync();
        proxy.ReleaseReplies(givingBackPort);

        await EventuallyAsync(
            async () => await ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE client_port = {givingBackPort}") == 0,
            "the give-back's connection is closed");
        await EventuallyAsync(() => Task.FromResult(consumer.Coordinator.Notifier.FlushAsync().IsCompleted), "the notifier is idle");
        Task flush = consumer.Coordinator.Notifier.FlushAsync();

        flush.Exception?.InnerException.Should().BeNull(
            "nothing of the coordinator's runs on its data source after DisposeAsync returned, and nothing fails unobserved");
    }

    /// <summary>
    /// As above, with the give-back's connection failing after the coordinator and its data source were disposed: no
    /// retry on the disposed data source fails unobserved.
    /// </summary>
    [PostgresFact]
    public async Task AGiveBackWhoseConnectionFailsAfterTheDataSourceIsDisposed_RaisesNoUnobservedTaskException()
    {
        var unobserved = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        EventHandler<UnobservedTaskExceptionEventArgs> handler = (_, e) =>
        {
            if (e.Exception.ToString().Contains("AsyncPrimitives.Postgres", StringComparison.Ordinal))
            {
                unobserved.Enqueue(e.Exception);
            }
        };
        TaskScheduler.UnobservedTaskException += handler;
        try
        {
            await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
            (Member consumer, _) = await GiveBackWithItsAnswerHeldAsync(proxy);

            await consumer.Coordinator.DisposeAsync();
            await consumer.Source.DisposeAsync();
            proxy.Sever(); // the give-back's connection fails before its answer is read
            await EventuallyAsync(
                async () => await ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{consumer.Application}'") == 0,
                "the coordinator's backends are gone");
            for (int i = 0; i < 3; i++)
            {
                await Task.Yield();
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }

            unobserved.Should().BeEmpty("a give-back never fails in the background");
        }
        finally
        {
            TaskScheduler.UnobservedTaskException -= handler;
        }
    }

    /// <summary>
    /// A consumer connected through <paramref name="proxy"/>, on a driven clock, whose delivery is lost here by its
    /// deadline while a transaction holds the item's row: the give-back waits at the server for the row; once the row
    /// is let go it runs, and its answer is held by the proxy.
    /// </summary>
    private async Task<(Member Consumer, int GivingBackPort)> GiveBackWithItsAnswerHeldAsync(TcpProxy proxy)
    {
        var time = new CountingTimeProvider();
        var options = new PostgresQueueOptions { LeaseDuration = TimeSpan.FromSeconds(10) }; // margin 1 s
        Member consumer = await JoinAsync(o => o.TimeProvider = time, port: proxy.Port);
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("after-dispose", options);
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync(TimeSpan.Zero);
        long token = delivery.Tracker.Id;

        int givingBackPort;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {delivery.Id} FOR UPDATE");
            time.Advance(TimeSpan.FromSeconds(9.5)); // the local deadline passes: Lost, and the give-back is sent
            await WaitForLostAsync(delivery.Lost);
            await EventuallyAsync(
                async () => await ScalarAsync<long>(
                    $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{consumer.Application}' " +
                    "AND wait_event_type = 'Lock' AND query LIKE '%queue_abandon%'") == 1,
                "the give-back waits at the server for the item's row");
            givingBackPort = await ScalarAsync<int>(
                $"SELECT client_port FROM pg_stat_activity WHERE application_name = '{consumer.Application}' AND query LIKE '%queue_abandon%'");
            proxy.HoldReplies(givingBackPort);
            await hold.CommitAsync();
        }

        await EventuallyAsync(
            async () => await ScalarAsync<long>(
                $"SELECT count(*) FROM @schema.queue_items WHERE id = {delivery.Id} AND lease_token = {token}") == 0,
            "the give-back has run on the server");
        return (consumer, givingBackPort);
    }

    /// <summary>The single-delivery form: the give-back queues behind the completion at the item's row.</summary>
    [PostgresFact]
    public async Task ACompleteInFlightWhenTheDeadlineFires_Completes()
    {
        var time = new CountingTimeProvider();
        var options = new PostgresQueueOptions { LeaseDuration = TimeSpan.FromSeconds(10) };
        Member consumer = await JoinAsync(o => o.TimeProvider = time);
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("in-flight-1", options);
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync(TimeSpan.Zero);

        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {delivery.Id} FOR UPDATE");
        Task completing = delivery.CompleteAsync().AsTask();
        await WaitsForALockAsync(consumer, "the completion waits at the server for the item's row");
        time.Advance(TimeSpan.FromSeconds(9.5));
        await WaitForLostAsync(delivery.Lost);
        await EventuallyAsync(
            async () => await ScalarAsync<long>(
                $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{consumer.Application}' AND wait_event_type = 'Lock'") >= 2,
            "the give-back waits behind the completion");
        await hold.CommitAsync();
        await completing.WaitAsync(Bound);
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    /// <summary>A delivery lost here by its deadline is delivered promptly to a getter of another process that
    /// polls once a minute, its attempt counted.</summary>
    [PostgresFact]
    public async Task ADeliveryLostHere_IsDeliveredPromptlyToAGetterOfAnotherProcess()
    {
        var time = new CountingTimeProvider();
        var options = new PostgresQueueOptions { LeaseDuration = TimeSpan.FromSeconds(10) };
        Member consumer = await JoinAsync(o => o.TimeProvider = time);
        Member other = await JoinAsync(o => o.PollInterval = TimeSpan.FromMinutes(1));
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("prompt", options);
        PostgresQueue<int> elsewhere = other.Coordinator.CreateQueue<int>("prompt", options);
        await queue.PutAsync(5);
        PostgresDelivery<int> delivery = await queue.GetAsync(TimeSpan.Zero);
        Task<PostgresDelivery<int>> getting = elsewhere.GetAsync(Bound).AsTask();
        await EventuallyAsync(
            async () => await ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{other.Application}' AND state = 'active'") == 0
                && !getting.IsCompleted,
            "the other getter sleeps");

        await LoseWhileItsRowIsHeldAsync(delivery, time);

        await using PostgresDelivery<int> again = await getting.WaitAsync(Bound);
        (again.Item, again.Attempt).Should().Be((5, 2));
        await again.CompleteAsync();
    }

    /// <summary>After a permit is lost here by its deadline, a waiter in another process (polling once a minute)
    /// gets it promptly: the give-back's release wakes it.</summary>
    [PostgresFact]
    public async Task APermitLostHere_IsTakenPromptlyByAWaiterOfAnotherProcess()
    {
        var time = new CountingTimeProvider();
        Member holder = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.LeaseDuration = TimeSpan.FromSeconds(10);
        });
        Member other = await JoinAsync(o => o.PollInterval = TimeSpan.FromMinutes(1));
        PostgresLease lease = await holder.Coordinator.CreateSemaphore("prompt", 1).AcquireAsync(TimeSpan.Zero);
        Task<PostgresLease> waiting = other.Coordinator.CreateSemaphore("prompt", 1).AcquireAsync(Bound).AsTask();
        await WaitersAsync(1);

        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using (NpgsqlTransaction turn = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            // The renewal is held at the server, so the beat cannot save the lease.
            await ExecuteAsync(turn, "SELECT @schema.permit_turn('s', 'prompt')");
            time.Advance(TimeSpan.FromSeconds(9.5));
            await WaitForLostAsync(lease.Lost);
            await turn.CommitAsync();
        }

        await using PostgresLease next = await waiting.WaitAsync(Bound);
        next.FencingToken.Should().BeGreaterThan(lease.FencingToken);
    }

    /// <summary>A delivery lost here by its deadline (the last attempt) goes to the dead letters at once; the join
    /// of another process (polling once a minute) is woken, and the counts agree.</summary>
    [PostgresFact]
    public async Task ADeliveryLostHereOnItsLastAttempt_IsDeadAtOnce_AndAJoinElsewhereReturns()
    {
        var time = new CountingTimeProvider();
        var options = new PostgresQueueOptions { LeaseDuration = TimeSpan.FromSeconds(10), MaxAttempts = 1 };
        Member consumer = await JoinAsync(o => o.TimeProvider = time);
        Member other = await JoinAsync(o => o.PollInterval = TimeSpan.FromMinutes(1));
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("dead", options);
        PostgresQueue<int> elsewhere = other.Coordinator.CreateQueue<int>("dead", options);
        await queue.PutAsync(7);
        PostgresDelivery<int> delivery = await queue.GetAsync(TimeSpan.Zero);
        Task joining = elsewhere.JoinAsync().AsTask();
        await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins") == 1, "the join waits");

        await LoseWhileItsRowIsHeldAsync(delivery, time);

        await joining.WaitAsync(Bound);
        ((await elsewhere.UnfinishedAsync()), (await elsewhere.DeadLetterCountAsync()), (await elsewhere.CountAsync())).Should().Be((0L, 1L, 0L));
        await FluentActions.Awaiting(() => delivery.CompleteAsync().AsTask()).Should().ThrowAsync<PostgresLeaseLostException>();
        await delivery.DisposeAsync();
    }

    /// <summary>Holds the delivery's row (so that no renewal of it gets through) while the clock passes its local
    /// deadline (9.5 s of a 10 s lease), until its <c>Lost</c> fires; then lets the row go.</summary>
    private async Task LoseWhileItsRowIsHeldAsync(PostgresDelivery<int> delivery, CountingTimeProvider time)
    {
        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {delivery.Id} FOR UPDATE");
        time.Advance(TimeSpan.FromSeconds(9.5));
        await WaitForLostAsync(delivery.Lost);
        await hold.CommitAsync();
    }
}
