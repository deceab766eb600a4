using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Queues under the server's two clocks: a statement's start (now()) and the present moment (clock_timestamp()). A
/// statement that waited at the server (for a row's lock, a turn) must judge every expiry it acts on, or tells others
/// about, by one clock, the one the others see.
/// </summary>
public sealed class QueueClockTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// "`JoinAsync` waits until that is zero (woken by the completion of the last one, in any process ...)"
    /// (docs/scale-out.md); "DeadLetterCountAsync: ... and those whose last delivery expired" (PostgresQueue), so an
    /// expired last delivery is finished for the joins. A join waits in another process for two deliveries of one
    /// holder. The first one's lease expires on its last attempt (played by the test: it ends at the server's present
    /// moment), while the completion of the second one, whose statement started before that, waits for its item's row
    /// (a renewal, any statement holding it). From then on the second item is the last one unfinished: its completion
    /// must wake the join, not judge by its statement's start that the first one was still out.
    /// </summary>
    [PostgresFact]
    public async Task TheCompletionOfTheLastUnfinishedItem_WakesTheJoin_WhenItWaitedForItsRowPastAnotherLeasesExpiry()
    {
        var holderTime = new CountingTimeProvider(); // no heartbeat, no local deadline: the server alone decides
        Member holder = await JoinAsync(o => { o.TimeProvider = holderTime; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        var time = new CountingTimeProvider(); // the join's polls never come: only a wake-up can reach it
        Member other = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = TimeSpan.FromHours(1); });
        PostgresQueue<int> held = holder.Coordinator.CreateQueue<int>("jobs", new PostgresQueueOptions { MaxAttempts = 1 });
        PostgresQueue<int> queue = other.Coordinator.CreateQueue<int>("jobs");
        await queue.PutManyAsync([1, 2]);
        IReadOnlyList<PostgresDelivery<int>> deliveries = await held.GetManyAsync(2, Bound);
        deliveries.Select(d => d.Item).Should().Equal(1, 2);
        PostgresDelivery<int> expiring = deliveries[0];
        PostgresDelivery<int> completed = deliveries[1];

        Task joined = queue.JoinAsync().AsTask();
        await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins") == 1, "the join is recorded");
        joined.IsCompleted.Should().BeFalse("two items are unfinished");

        // A lock that holds off the completion's delete but not an update of the other lease's expiry.
        Task completion = await CallHeldAtTheServerAsync(
            $"SELECT 1 FROM @schema.queue_items WHERE id = {completed.Id} FOR KEY SHARE",
            holder,
            () => completed.CompleteAsync().AsTask(),
            async _ =>
            {
                // Time passes at the server: the first lease ends now, after the completion's statement started.
                await ExpireLeasesNowAsync(expiring.Id);
                (await queue.DeadLetterCountAsync()).Should().Be(1, "the first item's last delivery expired");
                (await queue.UnfinishedAsync()).Should().Be(1, "only the item being completed is unfinished");
            });

        await completion.WaitAsync(Bound);
        (await queue.UnfinishedAsync()).Should().Be(0, "the last unfinished item was completed");
        await joined.WaitAsync(Bound); // the completion of the last one wakes the join
    }

    /// <summary>
    /// "Gets after a graceful shutdown end when nothing waits. (An expired delivery that another get is giving back at
    /// that moment counts as waiting.)" (docs/scale-out.md); "The loop ends when the queue is shut down and nothing is
    /// left to deliver" (PostgresQueue.ReadAllAsync). A read loop asks for its next item, completing the one it had in
    /// the same call; that completion waits for its item's row (a renewal, any statement holding it). Meanwhile another
    /// consumer's delivery expires (played by the test: it ends at the server's present moment, after the call's
    /// statement started), and another call holds its row to give it back (played by the test, as a get in another
    /// process that reclaims every expired delivery and may take fewer than it gives back). The loop's call must not end
    /// the loop saying that nothing is left: it waits and looks again, and takes the item.
    /// </summary>
    [PostgresFact]
    public async Task AReadLoop_OnAShutDownQueue_DoesNotEnd_WhenItsCompletionWaitedPastAnExpiryOfAnItemBeingGivenBack()
    {
        var holderTime = new CountingTimeProvider(); // no heartbeat: the server alone decides
        Member holder = await JoinAsync(o => { o.TimeProvider = holderTime; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        var time = new CountingTimeProvider(); // the loop's poll comes when the test says
        Member reader = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.PollInterval = TimeSpan.FromSeconds(1);
            o.LeaseDuration = TimeSpan.FromMinutes(1);
        });
        PostgresQueue<int> queueH = holder.Coordinator.CreateQueue<int>("jobs");
        PostgresQueue<int> queueR = reader.Coordinator.CreateQueue<int>("jobs");
        await queueH.PutManyAsync([1, 2]);
        PostgresDelivery<int> expiring = await queueH.GetAsync(Bound);
        expiring.Item.Should().Be(1);

        await using IAsyncEnumerator<PostgresDelivery<int>> loop = queueR.ReadAllAsync().GetAsyncEnumerator();
        (await loop.MoveNextAsync().AsTask().WaitAsync(Bound)).Should().BeTrue();
        PostgresDelivery<int> current = loop.Current;
        current.Item.Should().Be(2);
        await queueH.ShutdownAsync();

        Task<bool> next;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlConnection giver = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        await using (NpgsqlTransaction givingBack = await giver.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            // A lock that holds off the completion's delete.
            await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {current.Id} FOR KEY SHARE");
            next = loop.MoveNextAsync().AsTask();
            await WaitsForALockAsync(reader, "the loop's completion waits for its item's row");

            // Time passes at the server: the other lease ends now, after the loop's statement started; then a call giving
            // it back holds its row.
            await ExpireLeasesNowAsync(expiring.Id);
            (await queueH.CountAsync()).Should().Be(1, "the expired delivery will be delivered again");
            await ExecuteAsync(givingBack, $"SELECT 1 FROM @schema.queue_items WHERE id = {expiring.Id} FOR UPDATE");
            await hold.CommitAsync();

            // The call completes the loop's item, finds the expired one's row held, and ends, or sleeps until its poll.
            await EventuallyAsync(
                async () => await ScalarAsync<long>($"SELECT count(*) FROM @schema.queue_items WHERE id = {current.Id}") == 0,
                "the loop's call has committed");
            await givingBack.RollbackAsync();
        }

        // Its poll (a second at a time, until it has slept): the item comes back, and the loop takes it.
        await EventuallyAsync(
            () =>
            {
                time.Advance(TimeSpan.FromSeconds(1));
                return Task.FromResult(next.IsCompleted);
            },
            "the loop's call has answered");
        (await next).Should().BeTrue("an expired delivery was being given back when the loop looked: something was left to deliver");
        loop.Current.Item.Should().Be(1);
        loop.Current.Attempt.Should().Be(2);
        await loop.Current.CompleteAsync();
        GC.KeepAlive(expiring);
    }

    /// <summary>
    /// "Gets after a graceful shutdown end when nothing waits. (An expired delivery that another get is giving back at
    /// that moment counts as waiting.)" (docs/scale-out.md); "gets throw [QueueShutDownException] once nothing is left to
    /// deliver" (PostgresQueue.GetAsync); "The items waiting to be delivered ... deliveries that expired ... included when
    /// they have an attempt left, as they will be delivered again" (PostgresQueue.CountAsync). On a shut-down queue, a get
    /// finds nothing waiting and gives back the delivery of a consumer whose session ended (its process crashed), on its
    /// last attempt: that give-back (the move to the dead letters) waits for its dead letter's key (held by the test: any
    /// wait, or just time, between the give-back's look at the clock and the get's last look). Meanwhile another
    /// consumer's delivery expires (played by the test: it ends at the server's present moment). When the get then looks
    /// whether anything is left, that expired delivery is: the get must take it (or wait and look again), not end saying
    /// that nothing is left to deliver, judging the expiry by the clock it read when it started.
    /// </summary>
    [PostgresFact]
    public async Task AGet_OnAShutDownQueue_DoesNotEnd_WhenADeliveryExpiredWhileItsGiveBackOfADeadSessionsDeliveryWaited()
    {
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        // The crashed consumer: it will not hear of its session's end, nor give its delivery back itself.
        var crashedTime = new CountingTimeProvider();
        Member crashed = await JoinAsync(o => { o.TimeProvider = crashedTime; o.LeaseDuration = TimeSpan.FromMinutes(1); }, port: proxy.Port);
        var holderTime = new CountingTimeProvider(); // no heartbeat: the server alone decides
        Member holder = await JoinAsync(o => { o.TimeProvider = holderTime; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        var time = new CountingTimeProvider(); // the getter's poll comes when the test says
        Member getter = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = TimeSpan.FromSeconds(1); });
        PostgresQueue<int> queueC = crashed.Coordinator.CreateQueue<int>("jobs", new PostgresQueueOptions { MaxAttempts = 1 });
        PostgresQueue<int> queueH = holder.Coordinator.CreateQueue<int>("jobs");
        PostgresQueue<int> queue = getter.Coordinator.CreateQueue<int>("jobs");
        await queue.PutManyAsync([1, 2]);
        PostgresDelivery<int> dead = await queueC.GetAsync(Bound);
        dead.Item.Should().Be(1);
        PostgresDelivery<int> expiring = await queueH.GetAsync(Bound);
        expiring.Item.Should().Be(2);
        (await queue.TryGetAsync()).Should().BeNull("both items are delivered"); // the getter's session is open
        await queue.ShutdownAsync();

        Session session = await crashed.Coordinator.GetSessionAsync(CancellationToken.None);
        int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");
        proxy.HoldReplies(listenPort); // the crashed consumer does not hear its LISTEN connection end
        Task<PostgresDelivery<int>> get;
        try
        {
            (await ScalarAsync<bool>($"SELECT pg_terminate_backend({session.Pid})")).Should().BeTrue();
            await EventuallyAsync(
                async () => await ScalarAsync<bool>($"SELECT pg_try_advisory_xact_lock_shared({session.Key})"), "the server has seen the session end");
            (await queue.DeadLetterCountAsync()).Should().Be(1, "the last delivery's session has ended");
            (await queue.CountAsync()).Should().Be(0, "nothing waits");

            await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
            await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
            // Holds off the dead session's item's move to the dead letters (its key is taken, not yet committed).
            await HoldDeadLetterKeyAsync(hold, dead.Id);
            get = queue.GetAsync().AsTask();
            await WaitsForALockAsync(getter, "the get's give-back of the dead session's delivery waits for its dead letter's key");

            // Time passes at the server: the other lease ends now, after the get's statement started.
            await ExpireLeasesNowAsync(expiring.Id);
            (await queue.CountAsync()).Should().Be(1, "the expired delivery will be delivered again");
            await hold.RollbackAsync();
        }
        finally
        {
            proxy.ReleaseReplies(listenPort);
        }

        // Its poll (a second at a time, until it has answered): the expired item comes back, and the get takes it.
        await EventuallyAsync(
            () =>
            {
                time.Advance(TimeSpan.FromSeconds(1));
                return Task.FromResult(get.IsCompleted);
            },
            "the get has answered");
        PostgresDelivery<int> delivery = await get; // QueueShutDownException: nothing left, it says
        delivery.Item.Should().Be(2);
        delivery.Attempt.Should().Be(2);
        await delivery.CompleteAsync();
        GC.KeepAlive(expiring);
    }
}
