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

        Task<PostgresDelivery<int>> get;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, "SELECT 1 FROM @schema.queue_items FOR UPDATE"); // as a get giving it back holds it
            get = queueB.GetAsync().AsTask();
            // It looked, found the row locked, and sleeps until its poll (its timer and the session's heartbeat), or it ended.
            await Task.WhenAny(get, time.WaitForArmedTimersAsync(2)).WaitAsync(Bound);
            get.IsCompleted.Should().BeFalse("an item is being given back: something is left to deliver");
            await hold.RollbackAsync();
        }

        time.Advance(TimeSpan.FromSeconds(1)); // its poll: the expired delivery comes back, and this get takes it
        PostgresDelivery<int> delivery = await get.WaitAsync(Bound);
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
}
