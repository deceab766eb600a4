using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Queues under races between processes (two coordinators on one server, each a process): what a shutdown, a lease's
/// end or a completion promises must hold whichever of them comes first.
/// </summary>
public sealed class QueueRaceTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>Long enough that a test passing within it proves a wake-up came from a notification, not a poll.</summary>
    private static readonly TimeSpan s_noPolling = TimeSpan.FromHours(1);

    /// <summary>
    /// "Shuts the queue down for every process: later puts throw QueueShutDownException, and so do gets once nothing is
    /// left to deliver; waiting gets and joins are woken" (PostgresQueue.ShutdownAsync). Two getters wait in another
    /// process; items come back to the line without a notification (their leases expired, as when their consumer is cut
    /// off), then the queue is shut down. A wake-up that reached only the first getter, a batch get, would be used up by
    /// it taking the items that came back (fewer than it asked for, so it does not wake the next): the second getter must
    /// be woken too, and take an item or find the queue shut down and empty.
    /// </summary>
    [PostgresFact]
    public async Task ShutdownAsync_WakesEveryWaitingGetter_WhenTheFirstWokenTakesItemsThatCameBack()
    {
        Member a = await JoinAsync(o => o.PollInterval = s_noPolling);
        var time = new CountingTimeProvider(); // the getters' polls never come: only wake-ups can reach them
        Member b = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = s_noPolling; });
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        await queueA.PutManyAsync([1, 2]);
        await a.Coordinator.Notifier.FlushAsync(); // its notification went out before b listens
        IReadOnlyList<PostgresDelivery<int>> held = await queueA.GetManyAsync(2, Bound);
        (await queueB.TryGetAsync()).Should().BeNull("both items are delivered"); // b's session (and heartbeat) is open

        Task<IReadOnlyList<PostgresDelivery<int>>> batch = queueB.GetManyAsync(10).AsTask();
        Task<PostgresDelivery<int>> single = queueB.GetAsync().AsTask();
        // Both asked, found nothing, and sleep: their sleeps and the session's heartbeat are b's timers.
        await time.WaitForArmedTimersAsync(3).WaitAsync(Bound);

        // The holder's leases expire on the server (its consumer was cut off): the items wait again, and nobody is told.
        await ScalarAsync<int>("UPDATE @schema.queue_items SET leased_until = now() - interval '1 second'; SELECT 1");
        await queueA.ShutdownAsync();

        var taken = new List<PostgresDelivery<int>>(await batch.WaitAsync(Bound));
        try
        {
            taken.Add(await single.WaitAsync(Bound)); // woken too: it took an item, or found none left
        }
        catch (QueueShutDownException)
        {
            // Woken, and nothing was left to deliver to it: the batch get took both items.
        }

        taken.Select(d => d.Item).Should().BeEquivalentTo([1, 2], "each item that came back went to one of the getters");
        await FluentActions.Awaiting(() => queueB.GetAsync().AsTask().WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>(
            "the queue is shut down and nothing is left to deliver");

        await queueB.CompleteManyAsync(taken);
        GC.KeepAlive(held);
    }

    /// <summary>
    /// "gets throw [QueueShutDownException] once nothing is left to deliver" (PostgresQueue): an item whose delivery
    /// expired is left to deliver even while another call holds its row to give it back (a get in another process, which
    /// reclaims every expired delivery and may take fewer than it gives back). A get on a shut-down queue that finds the
    /// row locked must wait and look again, not end while that item is about to wait in line again with no getter left.
    /// </summary>
    [PostgresFact]
    public async Task AGet_OnAShutDownQueue_DoesNotEnd_WhileAnExpiredItemIsBeingGivenBack()
    {
        Member a = await JoinAsync();
        var time = new CountingTimeProvider(); // its get's poll comes when the test says
        Member b = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = TimeSpan.FromSeconds(1); });
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        await queueA.PutAsync(1);
        PostgresDelivery<int> held = await queueA.GetAsync(Bound);
        await queueA.ShutdownAsync();
        await ScalarAsync<int>("UPDATE @schema.queue_items SET leased_until = now() - interval '1 second'; SELECT 1");

        PostgresDelivery<int> delivery = await GetWhileTheItemsAreHeldAsync(queueB, time, "an expired delivery is being given back");
        delivery.Item.Should().Be(1);
        await delivery.CompleteAsync();
        GC.KeepAlive(held);
    }

    /// <summary>
    /// A delivery's lease ends with its session: "A session the server ended itself (it terminated the backend,
    /// restarted, or saw the connection close) frees the item at once: another consumer may get it before this process
    /// hears of the end ... The item may then be delivered to another consumer, and a completion is refused"
    /// (PostgresDelivery.Lost); "A completion that comes too late is refused with PostgresLeaseLostException, never
    /// silently applied" (PostgresQueue). On its last attempt, the item of a session that ended is a dead letter for the
    /// other processes ("DeadLetterCountAsync: ... and those whose last delivery expired or whose holder's session has
    /// ended"), and their joins see nothing unfinished. The holder has not heard of the end yet (its LISTEN connection's
    /// answers are held on the wire, and its clock does not move): its completion, which reaches the server after the
    /// end, must be refused, not turn that dead letter, which the joins already counted as finished, into a completion.
    /// </summary>
    [PostgresFact]
    public async Task ACompletion_ReachingTheServerAfterItsSessionEnded_IsRefused_NotAppliedToTheItemOthersCountAsDead()
    {
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        var time = new CountingTimeProvider(); // no heartbeat, no local deadline: the holder learns of the end only by its connection
        Member holder = await JoinAsync(o => { o.TimeProvider = time; o.LeaseDuration = TimeSpan.FromMinutes(1); }, port: proxy.Port);
        Member other = await JoinAsync();
        PostgresQueue<int> held = holder.Coordinator.CreateQueue<int>("jobs", new PostgresQueueOptions { MaxAttempts = 1 });
        PostgresQueue<int> queue = other.Coordinator.CreateQueue<int>("jobs");
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await held.GetAsync(Bound);

        Session session = await holder.Coordinator.GetSessionAsync(CancellationToken.None);
        int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");
        proxy.HoldReplies(listenPort); // the holder does not hear its LISTEN connection end (until its next ping times out)
        try
        {
            (await ScalarAsync<bool>($"SELECT pg_terminate_backend({session.Pid})")).Should().BeTrue();
            await EventuallyAsync(
                async () => await ScalarAsync<bool>($"SELECT pg_try_advisory_xact_lock_shared({session.Key})"), "the server has seen the session end");

            (await queue.DeadLetterCountAsync()).Should().Be(1, "the last delivery's session has ended");
            (await queue.UnfinishedAsync()).Should().Be(0);
            await queue.JoinAsync(TimeSpan.Zero); // nothing unfinished: a join completes
            delivery.Lost.IsCancellationRequested.Should().BeFalse("the holder has not heard of the end yet");

            await FluentActions.Awaiting(async () => await delivery.CompleteAsync()).Should().ThrowAsync<PostgresLeaseLostException>(
                "the lease ended with its session before the completion reached the server");
            (await queue.DeadLetterCountAsync()).Should().Be(1, "a dead letter the joins counted as finished stays one");
        }
        finally
        {
            proxy.ReleaseReplies(listenPort);
        }
    }

    /// <summary>
    /// "gets throw [QueueShutDownException] once nothing is left to deliver" (PostgresQueue); "The items waiting to be
    /// delivered ... deliveries that expired, or whose holder's session has ended, included when they have an attempt
    /// left, as they will be delivered again" (PostgresQueue.CountAsync). The delivery of a consumer whose session ended
    /// is left to deliver, as an expired one is, also while another call holds its row to give it back (a get in another
    /// process, which gives back every dead session's delivery and may take fewer than it gives back). A get on a
    /// shut-down queue that finds that row locked must wait and look again, not end while the item is about to wait in
    /// line again with no getter left.
    /// </summary>
    [PostgresFact]
    public async Task AGet_OnAShutDownQueue_DoesNotEnd_WhileADeadSessionsDeliveryIsBeingGivenBack()
    {
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        // The holder's process crashes: it will not hear of its session's end, nor give its delivery back itself.
        var holderTime = new CountingTimeProvider();
        Member holder = await JoinAsync(o => { o.TimeProvider = holderTime; o.LeaseDuration = TimeSpan.FromMinutes(1); }, port: proxy.Port);
        var time = new CountingTimeProvider(); // its get's poll comes when the test says
        Member b = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = TimeSpan.FromSeconds(1); });
        PostgresQueue<int> queueA = holder.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        await queueA.PutAsync(1);
        PostgresDelivery<int> held = await queueA.GetAsync(Bound);
        await queueA.ShutdownAsync();

        Session session = await holder.Coordinator.GetSessionAsync(CancellationToken.None);
        int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");
        proxy.HoldReplies(listenPort); // the holder does not hear its LISTEN connection end
        try
        {
            (await ScalarAsync<bool>($"SELECT pg_terminate_backend({session.Pid})")).Should().BeTrue();
            await EventuallyAsync(
                async () => await ScalarAsync<bool>($"SELECT pg_try_advisory_xact_lock_shared({session.Key})"), "the server has seen the session end");
            (await queueB.CountAsync()).Should().Be(1, "the dead session's delivery will be delivered again");

            PostgresDelivery<int> delivery = await GetWhileTheItemsAreHeldAsync(queueB, time, "a dead session's delivery is being given back");
            delivery.Item.Should().Be(1);
            await delivery.CompleteAsync();
        }
        finally
        {
            proxy.ReleaseReplies(listenPort);
        }

        GC.KeepAlive(held);
    }

    /// <summary>
    /// "Shuts the queue down for every process: later puts throw QueueShutDownException, and so do gets once nothing is
    /// left to deliver; waiting gets and joins are woken" (PostgresQueue.ShutdownAsync). A get in one process takes the
    /// last item, and looks for the shutdown before the shutdown commits. A get in another process that looks after the
    /// shutdown, while that take is in flight, would find the item still waiting (its row locked) and sleep, and the
    /// take, having seen no shutdown, would wake nobody. Once the take has committed nothing is left to deliver: that get
    /// must end, not sleep until its poll (which never comes here). The take is played by the test, step by step as
    /// queue_take runs them: take the queue's take turn, lock the waiting item, lease it (to a coordinator's live
    /// session), look for the shutdown; then commit.
    /// </summary>
    [PostgresFact]
    public async Task AGet_OnAShutDownQueue_Ends_WhenATakeThatLookedBeforeTheShutdownCommitsAfterIt()
    {
        Member a = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromMinutes(1));
        var time = new CountingTimeProvider(); // the getter's polls never come: only wake-ups can reach it
        Member b = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = s_noPolling; });
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        await queueA.PutAsync(1);
        Session session = await a.Coordinator.GetSessionAsync(CancellationToken.None);

        Task shutdown;
        Task<PostgresDelivery<int>> get;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction take = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(take, "SELECT @schema.queue_turn('numbers', true, false)");
            await ExecuteAsync(take, "SELECT 1 FROM @schema.queue_items WHERE lease_token IS NULL FOR UPDATE SKIP LOCKED");
            await ExecuteAsync(
                take,
                "UPDATE @schema.queue_items SET lease_token = nextval('@schema.ids'), attempts = attempts + 1, " +
                $"lease_owner = '{a.Coordinator.Owner}', session = {session.Key}, lease = interval '1 minute', " +
                "leased_until = now() + interval '1 minute', max_attempts = 5");
            (await ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM @schema.queues)")).Should().BeFalse("the take looks before the shutdown");

            shutdown = queueA.ShutdownAsync().AsTask();
            // The shutdown commits now, or waits for the take in flight.
            await Task.WhenAny(shutdown, WaitsForALockAsync(a, "the shutdown waits for the take")).WaitAsync(Bound);
            get = queueB.GetAsync().AsTask();
            // It looked: it sleeps (its sleep and the session's heartbeat are b's timers), or it waits at the server, or
            // it ended.
            await EventuallyAsync(
                async () => get.IsCompleted || time.ArmedTimers >= 2 ||
                    await ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{b.Application}' AND wait_event_type = 'Lock'") > 0,
                "the get has looked");
            get.IsCompleted.Should().BeFalse("the item still waited when it looked");
            await take.CommitAsync();
        }

        await shutdown.WaitAsync(Bound);
        await FluentActions.Awaiting(() => get.WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>(
            "the queue is shut down and nothing is left to deliver: the last item was taken");
    }

    /// <summary>
    /// "A completion that comes too late is refused with PostgresLeaseLostException, never silently applied"
    /// (PostgresQueue); on its last attempt, an item whose delivery expired is a dead letter for the other processes
    /// ("DeadLetterCountAsync: ... and those whose last delivery expired"), and their joins see nothing unfinished. A
    /// completion whose statement started before the lease's expiry but reached the item's row after it (it waited for
    /// the row's lock: a renewal, a give-back, any statement holding it) must not turn that dead letter, which the joins
    /// already counted as finished, into a completion. The expiry is played by the test: while the completion waits, the
    /// lease is made to end at the server's present moment (later than the completion's start), which the others see
    /// as expired.
    /// </summary>
    [PostgresFact]
    public async Task ACompletion_ReachingItsItemAfterTheLeaseExpired_IsRefused_NotAppliedToTheItemOthersCountAsDead()
    {
        var time = new CountingTimeProvider(); // no heartbeat, no local deadline: the server alone decides
        Member holder = await JoinAsync(o => { o.TimeProvider = time; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        Member other = await JoinAsync();
        PostgresQueue<int> held = holder.Coordinator.CreateQueue<int>("jobs", new PostgresQueueOptions { MaxAttempts = 1 });
        PostgresQueue<int> queue = other.Coordinator.CreateQueue<int>("jobs");
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await held.GetAsync(Bound);

        // A lock that holds off the completion's delete but not an update of the lease's expiry.
        Task completion = await CallHeldAtTheServerAsync(
            "SELECT 1 FROM @schema.queue_items FOR KEY SHARE",
            holder,
            () => delivery.CompleteAsync().AsTask(),
            async completing =>
            {
                // Time passes at the server: the lease ends now, after the completion's statement started.
                await ExpireLeasesNowAsync();
                (await queue.DeadLetterCountAsync()).Should().Be(1, "the last delivery expired");
                (await queue.UnfinishedAsync()).Should().Be(0);
                await queue.JoinAsync(TimeSpan.Zero); // nothing unfinished: a join completes
                completing.IsCompleted.Should().BeFalse("the completion still waits for the row");
            });

        await FluentActions.Awaiting(() => completion.WaitAsync(Bound)).Should().ThrowAsync<PostgresLeaseLostException>(
            "the lease had expired when the completion reached the item");
        (await queue.DeadLetterCountAsync()).Should().Be(1, "a dead letter the joins counted as finished stays one");
    }

    /// <summary>
    /// "Waits until nothing is unfinished: every item put has been completed (or dead-lettered ...)" (PostgresQueue.JoinAsync);
    /// "DeadLetterCountAsync: ... and those whose last delivery expired ... (a get moves them: the next one for an expired
    /// delivery ...)"; "A completion that comes too late is refused ..., never silently applied" (PostgresQueue). The
    /// heartbeat's renewal, sent as the heartbeat sends it, starts before the leases' expiry but reaches the items' rows
    /// after it (it waited for a row's lock). The others already counted the items as dead letters and a join
    /// completed: the renewal must not bring the expired leases back to life, so that the next get moves the items to
    /// the dead letters and the holder's completion is refused.
    /// </summary>
    [PostgresFact]
    public async Task ARenewal_ReachingTheItemsAfterTheirLeasesExpired_DoesNotReviveWhatOthersCountAsDead()
    {
        var time = new CountingTimeProvider(); // the heartbeat's own renewals never come: the test sends one
        Member holder = await JoinAsync(o => { o.TimeProvider = time; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        Member other = await JoinAsync();
        PostgresQueue<int> held = holder.Coordinator.CreateQueue<int>("jobs", new PostgresQueueOptions { MaxAttempts = 1 });
        PostgresQueue<int> queue = other.Coordinator.CreateQueue<int>("jobs");
        await queue.PutManyAsync([1, 2]);
        IReadOnlyList<PostgresDelivery<int>> deliveries = await held.GetManyAsync(2, Bound);
        deliveries.Should().HaveCount(2);
        Session session = await holder.Coordinator.GetSessionAsync(CancellationToken.None);

        await using NpgsqlConnection renewer = await holder.Source.OpenConnectionAsync();
        await using (var set = new NpgsqlCommand("SET default_transaction_isolation = 'read committed'", renewer))
        {
            await set.ExecuteNonQueryAsync();
        }

        // A lock that holds off the renewal's locking of the rows but not an update of the leases' expiry.
        Task renewal = await CallHeldAtTheServerAsync(
            "SELECT 1 FROM @schema.queue_items FOR KEY SHARE",
            holder,
            () => RenewDeliveriesAsync(renewer, holder.Coordinator.Owner, session.Key, [.. deliveries], TimeSpan.FromMinutes(1)),
            async _ =>
            {
                // Time passes at the server: the leases end now, after the renewal's statement started.
                await ExpireLeasesNowAsync();
                (await queue.DeadLetterCountAsync()).Should().Be(2, "the last deliveries expired");
                await queue.JoinAsync(TimeSpan.Zero); // nothing unfinished: a join completes
            });

        await renewal.WaitAsync(Bound);
        (await queue.TryGetAsync()).Should().BeNull("nothing waits: the expired deliveries were on their last attempt");
        (await queue.DeadLetterCountAsync()).Should().Be(2, "a get moved the expired deliveries to the dead letters");
        (await queue.UnfinishedAsync()).Should().Be(0, "the join counted them as finished");
        await FluentActions.Awaiting(async () => await held.CompleteManyAsync(deliveries)).Should().ThrowAsync<PostgresLeaseLostException>(
            "their leases expired before the completion");
    }

    /// <summary>
    /// Gets from <paramref name="queue"/>, a shut-down queue, while a transaction holds every item's row, as another get
    /// giving an item back does: the get must not end (<paramref name="why"/> something is left to deliver) but look,
    /// find the rows locked, and sleep until its poll (its timer and the session's heartbeat are the coordinator's
    /// timers on <paramref name="time"/>). Then the rows are let go and the poll comes: returns what the get takes.
    /// </summary>
    private async Task<PostgresDelivery<int>> GetWhileTheItemsAreHeldAsync(PostgresQueue<int> queue, CountingTimeProvider time, string why)
    {
        Task<PostgresDelivery<int>> get;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, "SELECT 1 FROM @schema.queue_items FOR UPDATE");
            get = queue.GetAsync().AsTask();
            await Task.WhenAny(get, time.WaitForArmedTimersAsync(2)).WaitAsync(Bound);
            get.IsCompleted.Should().BeFalse(why + ": something is left to deliver");
            await hold.RollbackAsync();
        }

        time.Advance(TimeSpan.FromSeconds(1)); // its poll: the item comes back, and this get takes it
        return await get.WaitAsync(Bound);
    }
}
