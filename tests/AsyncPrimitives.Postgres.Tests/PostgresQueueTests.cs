using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

public sealed class PostgresQueueTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>Long enough that a test passing within it proves a wake-up came from a notification, not a poll.</summary>
    private static readonly TimeSpan s_noPolling = TimeSpan.FromHours(1);

    public sealed record Job(int Number, string Name, DateTimeOffset At);

    [PostgresFact]
    public async Task Counts_AnExpiredDeliveryOfTheLastAttempt_AsDead_NotAsWaitingOrUnfinished()
    {
        // Expired deliveries go back in line, or to the dead letters after their last attempt, when a get next looks;
        // the counts say now where each will go.
        Member member = await JoinAsync();
        PostgresQueue<int> lastAttempt = member.Coordinator.CreateQueue<int>("numbers", new PostgresQueueOptions { MaxAttempts = 1 });
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("numbers", new PostgresQueueOptions { MaxAttempts = 2 });
        await queue.PutManyAsync([1, 2]);
        await using PostgresDelivery<int> dying = await lastAttempt.GetAsync(Bound);
        await using PostgresDelivery<int> retried = await queue.GetAsync(Bound);

        // Both leases expire on the server, as when their consumer is cut off.
        await ScalarAsync<int>("UPDATE @schema.queue_items SET leased_until = now() - interval '1 second'; SELECT 1");

        (await queue.CountAsync()).Should().Be(1, "the item with an attempt left waits to be delivered again");
        (await queue.UnfinishedAsync()).Should().Be(1);
        (await queue.DeadLetterCountAsync()).Should().Be(1, "the other had its last attempt");

        PostgresDelivery<int>? again = await queue.TryGetAsync();
        again.Should().NotBeNull();
        again!.Item.Should().Be(retried.Item);
        (await queue.CountAsync(), await queue.UnfinishedAsync(), await queue.DeadLetterCountAsync()).Should().Be((0L, 1L, 1L));
        await again.CompleteAsync();
        await queue.JoinAsync(Bound);
    }

    [PostgresFact]
    public async Task PutGetComplete_RoundTripsTheItem_AndCountsOnTheServer()
    {
        Member a = await JoinAsync();
        PostgresQueue<Job> jobs = a.Coordinator.CreateQueue<Job>("jobs");
        var job = new Job(42, "answer", new DateTimeOffset(2026, 5, 4, 3, 2, 1, TimeSpan.FromHours(2)));

        await jobs.PutAsync(job);
        (await jobs.CountAsync()).Should().Be(1);
        (await jobs.UnfinishedAsync()).Should().Be(1);

        await using PostgresDelivery<Job> delivery = await jobs.GetAsync();
        delivery.Item.Should().Be(job);
        delivery.Attempt.Should().Be(1);
        delivery.Id.Should().BePositive();
        (await jobs.CountAsync()).Should().Be(0);
        (await jobs.UnfinishedAsync()).Should().Be(1, "a delivered item is unfinished until completed");

        await delivery.CompleteAsync();
        await delivery.CompleteAsync(); // idempotent
        (await jobs.UnfinishedAsync()).Should().Be(0);
        (await jobs.TryGetAsync()).Should().BeNull();
        delivery.ToString().Should().Be($"PostgresDelivery<Job>(queue=jobs, id={delivery.Id}, attempt=1, completed)");
        jobs.ToString().Should().Be("PostgresQueue<Job>(name=jobs, order=Fifo, maxAttempts=5)");
    }

    [PostgresTheory]
    [InlineData(QueueOrder.Fifo, new[] { 1, 2, 3, 4, 5 })]
    [InlineData(QueueOrder.Lifo, new[] { 5, 4, 3, 2, 1 })]
    [InlineData(QueueOrder.Priority, new[] { 4, 2, 1, 5, 3 })]
    public async Task GetAsync_DeliversInTheQueueOrder(QueueOrder order, int[] expected)
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers", new PostgresQueueOptions { Order = order });
        int[] priorities = [7, 3, 9, 1, 8]; // of items 1..5
        for (int i = 1; i <= 5; i++)
        {
            await queue.PutAsync(i, priorities[i - 1]);
        }

        var taken = new List<int>();
        for (int i = 0; i < 5; i++)
        {
            await using PostgresDelivery<int> delivery = await queue.GetAsync();
            taken.Add(delivery.Item);
            await delivery.CompleteAsync();
        }

        taken.Should().Equal(expected);
    }

    [PostgresFact]
    public async Task GetManyAsync_TakesABatchInOrder_AndCompleteManyAsyncCompletesIt()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync(Enumerable.Range(1, 25));

        IReadOnlyList<PostgresDelivery<int>> first = await queue.GetManyAsync(10);
        first.Select(d => d.Item).Should().Equal(Enumerable.Range(1, 10));
        IReadOnlyList<PostgresDelivery<int>> rest = await queue.GetManyAsync(100, TimeSpan.Zero);
        rest.Select(d => d.Item).Should().Equal(Enumerable.Range(11, 15));
        (await queue.UnfinishedAsync()).Should().Be(25);

        await queue.CompleteManyAsync(first.Concat(rest));
        (await queue.UnfinishedAsync()).Should().Be(0);
        await queue.CompleteManyAsync([]);
    }

    [PostgresFact]
    public async Task GetAsync_InAnotherCoordinator_IsWokenByTheNotification()
    {
        Member producer = await JoinAsync(o => o.PollInterval = s_noPolling);
        Member consumer = await JoinAsync(o => o.PollInterval = s_noPolling);
        PostgresQueue<int> consumerQueue = consumer.Coordinator.CreateQueue<int>("numbers");
        Task<PostgresDelivery<int>> waiting = consumerQueue.GetAsync().AsTask();
        // The getter is waiting (or about to): either way the item must reach it without a poll.
        await producer.Coordinator.CreateQueue<int>("numbers").PutAsync(7);

        await using PostgresDelivery<int> delivery = await waiting.WaitAsync(Bound);
        delivery.Item.Should().Be(7);
    }

    [PostgresFact]
    public async Task PutInTransaction_IsDeliveredOnlyAfterCommit_AndWakesAGetterElsewhere()
    {
        Member producer = await JoinAsync(o => o.PollInterval = s_noPolling);
        Member consumer = await JoinAsync(o => o.PollInterval = s_noPolling);
        PostgresQueue<int> queue = producer.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> consumerQueue = consumer.Coordinator.CreateQueue<int>("numbers");
        Task<PostgresDelivery<int>> waiting = consumerQueue.GetAsync().AsTask();

        await using (NpgsqlConnection connection = await producer.Source.OpenConnectionAsync())
        await using (NpgsqlTransaction transaction = await connection.BeginTransactionAsync())
        {
            await queue.PutAsync(1, transaction);
            (await queue.CountAsync()).Should().Be(0, "the transaction has not committed");
            await transaction.RollbackAsync();
        }

        await using (NpgsqlConnection connection = await producer.Source.OpenConnectionAsync())
        await using (NpgsqlTransaction transaction = await connection.BeginTransactionAsync())
        {
            await queue.PutAsync(2, transaction);
            waiting.IsCompleted.Should().BeFalse();
            await transaction.CommitAsync();
        }

        await using PostgresDelivery<int> delivery = await waiting.WaitAsync(Bound);
        delivery.Item.Should().Be(2, "the rolled-back put enqueued nothing");
        (await queue.UnfinishedAsync()).Should().Be(1);
    }

    [PostgresFact]
    public async Task PutInTransaction_WhileAnOlderOneStaysOpen_WakesAGetterSoonAfterItsCommit()
    {
        // The commit watcher checks an open transaction less and less often; a new one must not wait for that.
        var time = new CountingTimeProvider();
        Member producer = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = s_noPolling; });
        var consumerTime = new CountingTimeProvider();
        Member consumer = await JoinAsync(o => { o.TimeProvider = consumerTime; o.PollInterval = s_noPolling; });
        PostgresQueue<int> queue = producer.Coordinator.CreateQueue<int>("numbers");

        await using NpgsqlConnection olderConnection = await producer.Source.OpenConnectionAsync();
        await using NpgsqlTransaction older = await olderConnection.BeginTransactionAsync();
        await queue.PutAsync(1, older);
        for (int check = 0; check < 16; check++)
        {
            // The watcher's only timer (the producer has no session): each check finds the older one in progress,
            // and the next comes twice as late, up to the poll interval (here an hour).
            await time.WaitForArmedTimersAsync().WaitAsync(Bound);
            time.Advance(TimeSpan.FromMinutes(10));
        }

        Task<PostgresDelivery<int>> waiting = consumer.Coordinator.CreateQueue<int>("numbers").GetAsync().AsTask();
        // The getter asked, found nothing, and sleeps: its sleep and its session's heartbeat are the consumer's timers.
        await consumerTime.WaitForArmedTimersAsync(2).WaitAsync(Bound);
        await using (NpgsqlConnection connection = await producer.Source.OpenConnectionAsync())
        await using (NpgsqlTransaction transaction = await connection.BeginTransactionAsync())
        {
            await queue.PutAsync(2, transaction);
            await transaction.CommitAsync();
        }

        // A second on the producer's clock: far more than the first check's 2 ms, far less than the older one's wait.
        await time.WaitForArmedTimersAsync().WaitAsync(Bound);
        time.Advance(TimeSpan.FromSeconds(1));
        await using PostgresDelivery<int> delivery = await waiting.WaitAsync(Bound);
        delivery.Item.Should().Be(2);
        await older.RollbackAsync();
    }

    [PostgresFact]
    public async Task PutInTransaction_AfterTheCommitWatchersClockFailedToCreateATimer_StillWakesAGetterElsewhere()
    {
        // The clock is user code: its failure to time the watcher's check must not end the watching for good.
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        Member producer = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = s_noPolling; });
        Member consumer = await JoinAsync(o => o.PollInterval = s_noPolling);
        PostgresQueue<int> queue = producer.Coordinator.CreateQueue<int>("numbers");
        Task<PostgresDelivery<int>> waiting = consumer.Coordinator.CreateQueue<int>("numbers").GetAsync().AsTask();

        // The watcher's timers are the producer's only ones (it has no session).
        await PutInTransactionAsync(1);
        await time.CreationFailed.WaitAsync(Bound);
        time.CreateTimerThrows = false;
        await PutInTransactionAsync(2);
        await time.FirstDueTime.WaitAsync(Bound);

        time.Advance(TimeSpan.FromSeconds(1)); // the check after the second put
        await using PostgresDelivery<int> delivery = await waiting.WaitAsync(Bound);
        delivery.Item.Should().Be(1);

        async Task PutInTransactionAsync(int item)
        {
            await using NpgsqlConnection connection = await producer.Source.OpenConnectionAsync();
            await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync();
            await queue.PutAsync(item, transaction);
            await transaction.CommitAsync();
        }
    }

    [PostgresTheory]
    [InlineData(System.Data.IsolationLevel.ReadCommitted)]
    [InlineData(System.Data.IsolationLevel.RepeatableRead)]
    public async Task PutInTransaction_AfterAShutdownCommittedDuringTheTransaction_Throws_AndEnqueuesNothing(System.Data.IsolationLevel isolation)
    {
        Member member = await JoinAsync();
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("numbers");
        await using NpgsqlConnection connection = await member.Source.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(isolation);
        await using (var first = new NpgsqlCommand("SELECT 1", connection, transaction))
        {
            await first.ExecuteScalarAsync(); // the transaction's first statement: at REPEATABLE READ, its snapshot
        }

        await queue.ShutdownAsync(immediate: true);

        await FluentActions.Awaiting(async () => await queue.PutAsync(1, transaction)).Should().ThrowAsync<QueueShutDownException>();
        await transaction.RollbackAsync();
        (await queue.UnfinishedAsync()).Should().Be(0);
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.queues")).Should().Be(1, "the put's check left no row of its own");
    }

    [PostgresTheory]
    [InlineData(System.Data.IsolationLevel.RepeatableRead)]
    [InlineData(System.Data.IsolationLevel.Serializable)]
    public async Task PutsInTransactions_AboveReadCommitted_AtOnce_AreAllEnqueued(System.Data.IsolationLevel isolation)
    {
        const int Producers = 4;
        const int Puts = 25;
        Member member = await JoinAsync();
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("numbers");

        async Task ProduceAsync(int producer)
        {
            for (int i = 0; i < Puts; i++)
            {
                await using NpgsqlConnection connection = await member.Source.OpenConnectionAsync();
                await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(isolation);
                await queue.PutAsync((producer * Puts) + i, transaction);
                await transaction.CommitAsync();
            }
        }

        await Task.WhenAll(Enumerable.Range(0, Producers).Select(p => Task.Run(() => ProduceAsync(p)))).WaitAsync(Bound);
        (await queue.CountAsync()).Should().Be(Producers * Puts);
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.queues")).Should().Be(0, "the queue is not shut down");
    }

    [PostgresFact]
    public async Task PutInTransaction_OnAnotherDatabaseOrCompleted_ThrowsNamingTheTransaction()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await using NpgsqlDataSource elsewhere = Server.CreateDataSource(b => b.Database = "template1");
        await using (NpgsqlConnection connection = await elsewhere.OpenConnectionAsync())
        await using (NpgsqlTransaction transaction = await connection.BeginTransactionAsync())
        {
            await FluentActions.Awaiting(async () => await queue.PutAsync(1, transaction))
                .Should().ThrowAsync<ArgumentException>().WithParameterName("transaction").WithMessage("*another database*");
        }

        await using (NpgsqlConnection connection = await a.Source.OpenConnectionAsync())
        {
            NpgsqlTransaction done = await connection.BeginTransactionAsync();
            await done.CommitAsync();
            await FluentActions.Awaiting(async () => await queue.PutAsync(1, done))
                .Should().ThrowAsync<ArgumentException>().WithParameterName("transaction").WithMessage("*completed*");
            await done.DisposeAsync();
        }

        await FluentActions.Awaiting(async () => await queue.PutAsync(1, (NpgsqlTransaction)null!))
            .Should().ThrowAsync<ArgumentNullException>().WithParameterName("transaction");
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task AbandonAsync_DeliversAgainWithTheNextAttempt_ThenDeadLettersAfterMaxAttempts()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers", new PostgresQueueOptions { MaxAttempts = 3 });
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers", new PostgresQueueOptions { MaxAttempts = 3 });
        await queueA.PutAsync(9);

        for (int attempt = 1; attempt <= 3; attempt++)
        {
            PostgresDelivery<int> delivery = await (attempt % 2 == 0 ? queueB : queueA).GetAsync(Bound);
            delivery.Attempt.Should().Be(attempt);
            delivery.Item.Should().Be(9);
            await delivery.AbandonAsync();
            await delivery.AbandonAsync(); // idempotent
        }

        (await queueA.TryGetAsync()).Should().BeNull("the third attempt was the last");
        (await queueA.DeadLetterCountAsync()).Should().Be(1);
        (await queueA.UnfinishedAsync()).Should().Be(0);
        (await ScalarAsync<string>("SELECT reason FROM @schema.queue_dead_letters")).Should().Be("abandoned");
    }

    [PostgresFact]
    public async Task DisposeAsync_OfAnOpenDelivery_GivesItBack()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(1);
        await using (PostgresDelivery<int> first = await queue.GetAsync())
        {
            first.Attempt.Should().Be(1);
        }

        await using PostgresDelivery<int> again = await queue.GetAsync(Bound);
        again.Attempt.Should().Be(2);
        await again.CompleteAsync();
        await FluentActions.Awaiting(async () => await again.AbandonAsync()).Should().ThrowAsync<InvalidOperationException>();
    }

    [PostgresFact]
    public async Task CompleteAsync_AfterAbandon_Throws()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync();
        await delivery.AbandonAsync();
        await FluentActions.Awaiting(async () => await delivery.CompleteAsync()).Should().ThrowAsync<InvalidOperationException>();
    }

    [PostgresFact]
    public async Task ALongJob_KeepsItsItem_PastTheLeaseDuration()
    {
        // Renewed every second (a third of the lease): a renewal may come 1.7 s late on a loaded machine (see the lock's
        // heartbeat test).
        Member a = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(3));
        Member b = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync();

        // Over two lease durations: a fixed invisibility timeout would have handed the item to b twice.
        Func<Task> other = async () => await b.Coordinator.CreateQueue<int>("numbers").GetAsync(TimeSpan.FromSeconds(6.5));
        await other.Should().ThrowAsync<TimeoutException>();
        delivery.Lost.IsCancellationRequested.Should().BeFalse();
        await delivery.CompleteAsync();
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task AQueueWithAShorterLease_CreatedOnceTheHeartbeatRuns_HasItsDeliveriesRenewedInTime()
    {
        // The heartbeat beats every third of the coordinator's 30 s lease; a queue whose deliveries last 3 s comes into
        // use between two beats. Its deliveries must be renewed within a third of 3 s, not at the next 10 s beat. The
        // coordinator's clock is driven here. The server's 3 s expiry is real time, which the loop below (a round trip
        // per step) can outlast on a loaded machine: the renewal would then find the delivery expired and lose it. So
        // the server's deadline is moved far out once the delivery is taken; a renewal sets it back to now() + 3 s.
        var time = new CountingTimeProvider();
        Member member = await JoinAsync(o => o.TimeProvider = time);
        await using (await member.Coordinator.CreateLock("opens-the-session").AcquireAsync(Bound))
        {
        }

        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>(
            "short", new PostgresQueueOptions { LeaseDuration = TimeSpan.FromSeconds(3) });
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync(Bound);
        DateTime leasedUntil = await ScalarAsync<DateTime>(
            "UPDATE @schema.queue_items SET leased_until = now() + interval '1 hour' RETURNING leased_until");

        // The clock moves on in small steps until the server shows a renewal, up to 2 s: past the 1 s beat, short of
        // the delivery's own deadline (2.7 s on this clock), which must not pass first. From there only the renewal's
        // own round trip is waited for (in real time: under load it may take longer than many steps of this loop).
        TimeSpan advanced = TimeSpan.Zero;
        await EventuallyAsync(
            async () =>
            {
                delivery.Lost.IsCancellationRequested.Should().BeFalse("the delivery is renewed before its deadline");
                if (advanced < TimeSpan.FromSeconds(2))
                {
                    time.Advance(TimeSpan.FromMilliseconds(25));
                    advanced += TimeSpan.FromMilliseconds(25);
                }

                return await ScalarAsync<DateTime>("SELECT leased_until FROM @schema.queue_items") != leasedUntil;
            },
            "the heartbeat renews the delivery");
        delivery.Lost.IsCancellationRequested.Should().BeFalse();
        await delivery.CompleteAsync();
    }

    [PostgresFact]
    public async Task GetAsync_Cancelled_TakesNothing_AndTimeout_Throws()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        using var cancel = new CancellationTokenSource();
        Task<PostgresDelivery<int>> waiting = queue.GetAsync(cancel.Token).AsTask();
        cancel.Cancel();
        await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        await FluentActions.Awaiting(async () => await queue.GetAsync(TimeSpan.FromMilliseconds(100))).Should().ThrowAsync<TimeoutException>();
        await FluentActions.Awaiting(async () => await queue.GetAsync(TimeSpan.Zero)).Should().ThrowAsync<TimeoutException>();
        await FluentActions.Awaiting(async () => await queue.GetManyAsync(5, TimeSpan.Zero)).Should().ThrowAsync<TimeoutException>();
        await FluentActions.Awaiting(async () => await queue.GetAsync(new CancellationToken(canceled: true))).Should().ThrowAsync<OperationCanceledException>();

        await queue.PutAsync(5);
        await using PostgresDelivery<int> delivery = await queue.GetAsync();
        delivery.Attempt.Should().Be(1, "the cancelled and timed-out gets took nothing");
    }

    [PostgresFact]
    public async Task JoinAsync_WaitsUntilEveryItemIsCompleted_ByAnyCoordinator()
    {
        Member a = await JoinAsync(o => o.PollInterval = s_noPolling);
        Member b = await JoinAsync(o => o.PollInterval = s_noPolling);
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        await queueA.JoinAsync(TimeSpan.Zero); // nothing unfinished
        await queueA.PutManyAsync([1, 2]);

        Task joined = queueA.JoinAsync().AsTask();
        PostgresDelivery<int> one = await queueB.GetAsync();
        PostgresDelivery<int> two = await queueB.GetAsync();
        await one.CompleteAsync();
        joined.IsCompleted.Should().BeFalse("one item is still unfinished");
        await FluentActions.Awaiting(async () => await queueA.JoinAsync(TimeSpan.FromMilliseconds(50))).Should().ThrowAsync<TimeoutException>();
        await two.CompleteAsync();
        await joined.WaitAsync(Bound);
    }

    [PostgresFact]
    public async Task JoinAsync_TimedOutOrCancelled_LeavesNoRow_AndAJoinRemovesTheRowsOfEndedSessions()
    {
        Member a = await JoinAsync(o => o.PollInterval = s_noPolling);
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(1);

        await FluentActions.Awaiting(async () => await queue.JoinAsync(TimeSpan.FromMilliseconds(100))).Should().ThrowAsync<TimeoutException>();
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins")).Should().Be(0, "the timed-out join left");

        using (var cts = new CancellationTokenSource())
        {
            Task joining = queue.JoinAsync(cts.Token).AsTask();
            await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins") == 1, "the join is recorded");
            cts.Cancel();
            await FluentActions.Awaiting(() => joining.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        }

        (await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins")).Should().Be(0, "the cancelled join left");

        // A process that died while joining (its session's advisory lock is free): its row goes with the next join.
        await ScalarAsync<int>("INSERT INTO @schema.queue_joins (id, queue, owner, session) VALUES (nextval('@schema.ids'), 'numbers', gen_random_uuid(), 4242); SELECT 1");
        await FluentActions.Awaiting(async () => await queue.JoinAsync(TimeSpan.FromMilliseconds(50))).Should().ThrowAsync<TimeoutException>();
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins")).Should().Be(0, "the ended session's row was removed");
    }

    [PostgresFact]
    public async Task ImmediateShutdown_WhileAStatementHoldsItemsItIsAboutToChange_WaitsForIt_NeitherFails()
    {
        // A get, a completion and a renewal each lock their items (FOR UPDATE), then change them. An immediate shutdown
        // that comes between the two must wait for that statement, not meet it in a deadlock (40P01, failing one).
        Member member = await JoinAsync();
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);
        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(transaction, "SELECT id FROM @schema.queue_items ORDER BY id FOR UPDATE");

        Task shutdown = queue.ShutdownAsync(immediate: true).AsTask();
        await WaitsForALockAsync(member, "the shutdown waits for a lock");
        await ExecuteAsync(transaction, "UPDATE @schema.queue_items SET attempts = attempts + 1"); // the change, after the lock
        await transaction.CommitAsync();

        await shutdown.WaitAsync(Bound);
        (await queue.UnfinishedAsync()).Should().Be(0, "the immediate shutdown dropped every item");
    }

    [PostgresFact]
    public async Task AShutdownWaitingForAnOpenTransactionThatPutInItsQueue_HoldsUpNothingElse()
    {
        Member app = await JoinAsync();
        Member other = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(2));
        PostgresQueue<int> emails = app.Coordinator.CreateQueue<int>("emails");
        PostgresQueue<int> reports = app.Coordinator.CreateQueue<int>("reports");
        PostgresQueue<int> jobs = other.Coordinator.CreateQueue<int>("jobs");
        await jobs.PutAsync(1);
        PostgresDelivery<int> held = await jobs.GetAsync(Bound);
        await using PostgresLease lease = await other.Coordinator.CreateLock("nightly").AcquireAsync(Bound);

        await using NpgsqlConnection connection = await app.Source.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await emails.PutAsync(1, transaction); // a business transaction that stays open

        await reports.ShutdownAsync().AsTask().WaitAsync(Bound); // another queue: nothing to wait for
        Task shutdown = emails.ShutdownAsync().AsTask();
        await WaitsForALockAsync(app, "the shutdown of 'emails' waits for the transaction that put in it");

        // Meanwhile other queues' puts and gets, and the heartbeat's renewal of a lock and a delivery, go on.
        await jobs.PutAsync(7).AsTask().WaitAsync(Bound);
        (await jobs.GetAsync(Bound)).Item.Should().Be(7);
        DateTime permitBefore = await ScalarAsync<DateTime>("SELECT max(expires_at) FROM @schema.permit_slots");
        DateTime itemBefore = await ScalarAsync<DateTime>($"SELECT leased_until FROM @schema.queue_items WHERE id = {held.Id}");
        await EventuallyAsync(
            async () => await ScalarAsync<DateTime>("SELECT max(expires_at) FROM @schema.permit_slots") > permitBefore &&
                        await ScalarAsync<DateTime>($"SELECT leased_until FROM @schema.queue_items WHERE id = {held.Id}") > itemBefore,
            "the heartbeat renewed the lock's lease and the delivery's");
        lease.Lost.IsCancellationRequested.Should().BeFalse();
        shutdown.IsCompleted.Should().BeFalse("the put's transaction is still open");

        await transaction.CommitAsync();
        await shutdown.WaitAsync(Bound);
        (await emails.CountAsync()).Should().Be(1, "the put in flight committed before the shutdown");
        await FluentActions.Awaiting(async () => await emails.PutAsync(2)).Should().ThrowAsync<QueueShutDownException>();
    }

    [PostgresFact]
    public async Task ShutdownAsync_SeenByEveryCoordinator_PutsFail_GetsDrainThenFail()
    {
        Member a = await JoinAsync(o => o.PollInterval = s_noPolling);
        Member b = await JoinAsync(o => o.PollInterval = s_noPolling);
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        await queueA.PutAsync(1);
        PostgresDelivery<int> first = await queueB.GetAsync();
        await queueA.PutAsync(2);

        await queueA.ShutdownAsync();
        await queueA.ShutdownAsync(); // idempotent

        await FluentActions.Awaiting(async () => await queueB.PutAsync(3)).Should().ThrowAsync<QueueShutDownException>();
        await using PostgresDelivery<int> second = await queueB.GetAsync();
        second.Item.Should().Be(2, "what was put before the shutdown is still delivered");
        await FluentActions.Awaiting(async () => await queueB.GetAsync()).Should().ThrowAsync<QueueShutDownException>();
        await FluentActions.Awaiting(async () => await queueA.TryGetAsync()).Should().ThrowAsync<QueueShutDownException>();
        await first.CompleteAsync();
        await second.CompleteAsync();
        await queueA.JoinAsync(Bound);
    }

    [PostgresFact]
    public async Task ShutdownAsync_WakesWaitingGetters_WhichThenThrow()
    {
        Member a = await JoinAsync(o => o.PollInterval = s_noPolling);
        Member b = await JoinAsync(o => o.PollInterval = s_noPolling);
        Task<PostgresDelivery<int>> waiting = b.Coordinator.CreateQueue<int>("numbers").GetAsync().AsTask();
        await EventuallyAsync(() => Task.FromResult(b.Coordinator.Signals.Count == 1), "the getter waits");

        await a.Coordinator.CreateQueue<int>("numbers").ShutdownAsync();

        await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>();
    }

    [PostgresFact]
    public async Task ShutdownAsync_Immediate_DropsEverything_LeavingNothingUnfinished()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        await queueA.PutManyAsync([1, 2, 3]);
        PostgresDelivery<int> delivered = await queueB.GetAsync();
        Task joined = queueA.JoinAsync().AsTask();

        await queueA.ShutdownAsync(immediate: true);

        (await queueA.UnfinishedAsync()).Should().Be(0);
        await joined.WaitAsync(Bound);
        await delivered.CompleteAsync(); // dropped: nothing left to do, no loss to report
        await FluentActions.Awaiting(async () => await queueB.GetAsync()).Should().ThrowAsync<QueueShutDownException>();
        await FluentActions.Awaiting(async () => await queueB.PutAsync(4)).Should().ThrowAsync<QueueShutDownException>();
    }

    [PostgresFact]
    public async Task ShutdownAsync_Immediate_ADeliveryWhoseLostHasFired_CompletesAsANoOp()
    {
        // The heartbeat's next renewal finds the dropped item gone and fires Lost; completing is still a no-op (the
        // item is dropped, nothing is unfinished), however late it comes.
        var time = new CountingTimeProvider();
        Member a = await JoinAsync(o => o.TimeProvider = time);
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);
        PostgresDelivery<int> one = await queue.GetAsync(Bound);
        PostgresDelivery<int> two = await queue.GetAsync(Bound);

        await queue.ShutdownAsync(immediate: true);
        await AdvanceUntilLostAsync(time, one.Lost);

        await one.CompleteAsync();
        await queue.CompleteManyAsync([two]);
        one.ToString().Should().Contain("completed");
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task ManyProducersAndConsumers_OnTwoCoordinators_EveryItemCompletedExactlyOnce()
    {
        const int Items = 300;
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        var completed = new System.Collections.Concurrent.ConcurrentBag<int>();
        using var done = new CancellationTokenSource();

        async Task ConsumeAsync(PostgresQueue<int> queue, bool batches)
        {
            while (completed.Count < Items)
            {
                try
                {
                    IReadOnlyList<PostgresDelivery<int>> got = batches
                        ? await queue.GetManyAsync(7, done.Token)
                        : [await queue.GetAsync(done.Token)];
                    foreach (PostgresDelivery<int> delivery in got)
                    {
                        delivery.Attempt.Should().Be(1, "nothing failed, so nothing is delivered twice");
                    }

                    await queue.CompleteManyAsync(got);
                    foreach (PostgresDelivery<int> delivery in got)
                    {
                        completed.Add(delivery.Item);
                    }
                }
                catch (OperationCanceledException) when (done.IsCancellationRequested)
                {
                    return;
                }
            }

            done.Cancel();
        }

        Task[] consumers = [.. new[] { (queueA, false), (queueA, true), (queueB, false), (queueB, true) }
            .Select(c => Task.Run(() => ConsumeAsync(c.Item1, c.Item2)))];
        Task[] producers =
        [
            Task.Run(async () => { for (int i = 0; i < Items; i += 2) { await queueA.PutAsync(i); } }),
            Task.Run(async () => { for (int i = 1; i < Items; i += 10) { await queueB.PutManyAsync(Enumerable.Range(0, 5).Select(k => i + (2 * k))); } }),
        ];

        await Task.WhenAll(producers).WaitAsync(TimeSpan.FromSeconds(60));
        await Task.WhenAll(consumers).WaitAsync(TimeSpan.FromSeconds(60));
        completed.Order().Should().Equal(Enumerable.Range(0, Items));
        (await queueA.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task AnItemThatCannotBeRead_FailsTheGet_AndIsGivenBack()
    {
        Member a = await JoinAsync();
        await a.Coordinator.CreateQueue<string>("mixed").PutAsync("not a number");
        PostgresQueue<int> numbers = a.Coordinator.CreateQueue<int>("mixed", new PostgresQueueOptions { MaxAttempts = 2 });

        await FluentActions.Awaiting(async () => await numbers.GetAsync()).Should().ThrowAsync<PostgresCoordinationException>()
            .WithInnerException(typeof(System.Text.Json.JsonException));
        (await numbers.CountAsync()).Should().Be(1, "the item was given back");
        await FluentActions.Awaiting(async () => await numbers.GetAsync()).Should().ThrowAsync<PostgresCoordinationException>();
        (await numbers.DeadLetterCountAsync()).Should().Be(1, "after MaxAttempts it moved to the dead letters");
    }

    [PostgresFact]
    public async Task AnItemThatCannotBeRead_InABatch_TakesOnlyItselfToTheDeadLetters_NotTheReadableItemsGivenBackWithIt()
    {
        Member a = await JoinAsync();
        await a.Coordinator.CreateQueue<string>("mixed").PutAsync("not a number");
        PostgresQueue<int> numbers = a.Coordinator.CreateQueue<int>("mixed", new PostgresQueueOptions { MaxAttempts = 2 });
        await numbers.PutManyAsync([7, 8]);

        for (int round = 0; round < 2; round++)
        {
            await FluentActions.Awaiting(async () => await numbers.GetManyAsync(3, Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        }

        (await numbers.DeadLetterCountAsync()).Should().Be(1, "only the unreadable item had its MaxAttempts deliveries");
        IReadOnlyList<PostgresDelivery<int>> readable = await numbers.GetManyAsync(3, Bound);
        readable.Select(d => (d.Item, d.Attempt)).Should().Equal([(7, 1), (8, 1)],
            "items given back for their neighbour's failure were never handed to a consumer: their attempts do not count");
        await numbers.CompleteManyAsync(readable);
    }

    [PostgresFact]
    public async Task ALastAttemptHeldByASessionThatEnded_IsDeadLetteredWithTheReasonSessionEnded()
    {
        Member consumer = await JoinAsync();
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("numbers", new PostgresQueueOptions { MaxAttempts = 1 });
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync(Bound);

        (await TerminateAsync(consumer)).Should().BeGreaterThan(0);
        await WaitForLostAsync(delivery.Lost);
        await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_dead_letters") == 1, "the item is dead-lettered");

        (await ScalarAsync<string>("SELECT reason FROM @schema.queue_dead_letters")).Should().Be("session ended", "its holder never abandoned it");
    }
}
