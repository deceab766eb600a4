using System.Diagnostics;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Queues when things break: a consumer whose backends are killed, one cut off from the server, a server restart. No
/// item is lost, a crashed consumer's item comes back with the next attempt, a late completion is refused, and later
/// calls work.
/// </summary>
public sealed class QueueFailureTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// A consumer that took an item and crashed: once the server has seen its session end, the next get delivers the
    /// item again at once, so <c>CountAsync</c> counts it as waiting (a <c>while (CountAsync() &gt; 0)</c> loop would
    /// otherwise stop with it still to do), and <c>DeadLetterCountAsync</c> its last attempt as a dead letter. The crashed
    /// consumer is a connection holding a session's key, which took the item under it.
    /// </summary>
    [PostgresTheory]
    [InlineData(5)]
    [InlineData(1)]
    public async Task ACrashedConsumersItem_IsCountedAsWhatTheNextGetMakesOfIt(int maxAttempts)
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers", new PostgresQueueOptions { MaxAttempts = maxAttempts });
        await queue.PutAsync(1);
        long key = Random.Shared.NextInt64(1, long.MaxValue);
        await using (NpgsqlConnection session = await Admin.OpenConnectionAsync())
        {
            await using (var lockKey = new NpgsqlCommand($"SELECT pg_advisory_lock({key})", session))
            {
                await lockKey.ExecuteNonQueryAsync();
            }

            (await ScalarAsync<long>(
                $"SELECT item_id FROM @schema.queue_take('numbers', 'f', 1, gen_random_uuid(), {key}, interval '1 hour', {maxAttempts}, NULL, NULL)"))
                .Should().BeGreaterThan(0, "the consumer took the item");
            (await queue.CountAsync()).Should().Be(0, "the item is delivered, and its consumer lives");
        } // the consumer's process dies: the server sees its connection close

        await EventuallyAsync(async () => await ScalarAsync<bool>($"SELECT pg_try_advisory_xact_lock_shared({key})"), "the server has seen the session end");
        (await queue.CountAsync()).Should().Be(maxAttempts > 1 ? 1 : 0);
        (await queue.DeadLetterCountAsync()).Should().Be(maxAttempts > 1 ? 0 : 1);
        (await queue.UnfinishedAsync()).Should().Be(maxAttempts > 1 ? 1 : 0);
        await using PostgresDelivery<int>? again = await queue.TryGetAsync();
        if (maxAttempts > 1)
        {
            again.Should().NotBeNull("a get delivers the crashed consumer's item again at once");
            again!.Attempt.Should().Be(2);
            await again.CompleteAsync();
        }
        else
        {
            again.Should().BeNull("its last attempt was spent: a dead letter");
            (await queue.DeadLetterCountAsync()).Should().Be(1);
        }
    }

    /// <summary>The "join" queue's options in these tests: every delivery is an item's last attempt.</summary>
    private static PostgresQueueOptions LastAttempts => new() { MaxAttempts = 1 };

    /// <summary>A coordinator that polls once an hour: a wait of it that ends was woken.</summary>
    private Task<Member> JoinWithoutPollingAsync() => JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));

    /// <summary>Starts a join of the "join" queue in another coordinator that does not poll, and returns once it waits
    /// on the server.</summary>
    private async Task<(PostgresQueue<int> Queue, Task Joined)> JoinElsewhereAsync()
    {
        Member joiner = await JoinWithoutPollingAsync();
        PostgresQueue<int> queue = joiner.Coordinator.CreateQueue<int>("join", LastAttempts);
        Task joined = queue.JoinAsync().AsTask();
        await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins") == 1, "the join waits");
        return (queue, joined);
    }

    [PostgresFact]
    public async Task AJoinWaiting_IsWokenByTheCompletionThatLeavesNothingUnfinished_BesideAnExpiredLastAttempt()
    {
        Member consumer = await JoinWithoutPollingAsync();
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("join", LastAttempts);
        await queue.PutManyAsync([1, 2]);
        PostgresDelivery<int> dying = await queue.GetAsync(Bound);
        PostgresDelivery<int> working = await queue.GetAsync(Bound);
        await ScalarAsync<int>($"UPDATE @schema.queue_items SET leased_until = now() - interval '1 second' WHERE id = {dying.Id}; SELECT 1");
        (await queue.UnfinishedAsync()).Should().Be(1, "the expired last attempt counts as a dead letter");

        (_, Task joined) = await JoinElsewhereAsync();
        await working.CompleteAsync();

        await joined.WaitAsync(Bound); // woken by the completion, not by a poll (an hour away)
    }

    [PostgresFact]
    public async Task AJoinWaiting_IsWoken_WhenDisposingTheHolderMovesTheLastItemToTheDeadLetters()
    {
        // The holder's session gives its item back as it closes; on its last attempt the item goes to the dead letters,
        // so nothing is unfinished: the join in the other process is told, as an abandonment would tell it.
        Member holder = await JoinWithoutPollingAsync();
        PostgresQueue<int> queue = holder.Coordinator.CreateQueue<int>("join", LastAttempts);
        await queue.PutAsync(1);
        PostgresDelivery<int> held = await queue.GetAsync(Bound);

        (PostgresQueue<int> joinerQueue, Task joined) = await JoinElsewhereAsync();

        await holder.Coordinator.DisposeAsync();
        (await joinerQueue.DeadLetterCountAsync()).Should().Be(1);
        await joined.WaitAsync(Bound); // woken, not by a poll an hour away

        // Held to the end: a delivery nothing references is no longer renewed once the garbage collector finds it
        // (then not the holder's when it closes), which is not this test's case.
        GC.KeepAlive(held);
    }

    [PostgresFact]
    public async Task ACompletion_WhoseAnswerComesAfterARenewalFoundTheItemGone_DoesNotFireLost()
    {
        // The completion commits, its answer is held back; meanwhile the heartbeat's renewal (another connection) finds
        // the item gone. The completion's own answer decides: completed, so Lost never fires.
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        var time = new CountingTimeProvider();
        Member member = await JoinAsync(o => o.TimeProvider = time, port: proxy.Port);
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("done");
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync(Bound);
        await time.WaitForArmedTimersAsync(2).WaitAsync(Bound); // the heartbeat's next beat and the delivery's deadline

        Task completing;
        int port;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {delivery.Id} FOR UPDATE");
            completing = delivery.CompleteAsync().AsTask();
            await WaitsForALockAsync(member, "the completion waits for the item's row");
            port = await ScalarAsync<int>(
                $"SELECT client_port FROM pg_stat_activity WHERE application_name = '{member.Application}' AND wait_event_type = 'Lock'");
            proxy.HoldReplies(port);
            await hold.CommitAsync();
        }

        await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_items") == 0, "the completion committed");
        long timers = time.TimerCreations;
        time.Advance(member.Coordinator.LeaseDuration / 3);

        // The beat waits for its renewal with a timer, and arms the next beat once the renewal's answer is handled.
        await EventuallyAsync(() => Task.FromResult(time.TimerCreations >= timers + 2), "the renewal's answer was handled");
        delivery.ToString().Should().Contain("held", "the renewal leaves the verdict to the completion in flight");
        proxy.ReleaseReplies(port);

        await completing.WaitAsync(Bound);
        delivery.ToString().Should().Contain("completed");
        delivery.Lost.IsCancellationRequested.Should().BeFalse("Lost is never cancelled by completing");
    }

    [PostgresFact]
    public async Task ABatchCompletion_OfADeliveryWhoseCompletionIsInFlight_ThrowsInProgress_AndNeitherCallsItLost()
    {
        // Two completions of one delivery in one process: the second does not race the first to the server (where the
        // loser would find the item gone and call the lease lost, of an item this process completed).
        Member member = await JoinAsync();
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("jobs");
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync(Bound);

        Task completing;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {delivery.Id} FOR UPDATE");
            completing = delivery.CompleteAsync().AsTask();
            await WaitsForALockAsync(member, "the completion waits for the item's row");
            await FluentActions.Awaiting(async () => await queue.CompleteManyAsync([delivery])).Should()
                .ThrowAsync<InvalidOperationException>().WithMessage("*in progress*");
            await hold.CommitAsync();
        }

        await completing.WaitAsync(Bound);
        await queue.CompleteManyAsync([delivery, delivery]); // completed already: nothing to do
        await queue.PutAsync(2);
        PostgresDelivery<int> listedTwice = await queue.GetAsync(Bound);
        await queue.CompleteManyAsync([listedTwice, listedTwice]); // one batch is one call, not two in progress at once
        (await queue.UnfinishedAsync()).Should().Be(0);
        delivery.Lost.IsCancellationRequested.Should().BeFalse();
        delivery.ToString().Should().Contain("completed");
    }

    [PostgresFact]
    public async Task ConsumerBackendsTerminated_ItsItemIsDeliveredAgain_WellBeforeTheLeaseExpires()
    {
        Member crashing = await JoinAsync();
        Member other = await JoinAsync();
        PostgresQueue<int> queue = crashing.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(1);
        PostgresDelivery<int> first = await queue.GetAsync();

        var clock = Stopwatch.StartNew();
        await TerminateAsync(crashing);

        await using PostgresDelivery<int> again = await other.Coordinator.CreateQueue<int>("numbers").GetAsync(Bound);
        clock.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(10), "a dead session's items come back without waiting for the 30 s lease");
        again.Item.Should().Be(1);
        again.Attempt.Should().Be(2, "the attempt is counted on the server");
        await WaitForLostAsync(first.Lost);
        await FluentActions.Awaiting(async () => await first.CompleteAsync()).Should().ThrowAsync<PostgresLeaseLostException>();
        await again.CompleteAsync();
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task CutOffConsumer_SeesLost_ItsItemGoesToAnother_AndItsLateCompletionIsRefused()
    {
        // Long enough that Lost's margin (a tenth of the lease) absorbs this process's scheduling delays on a loaded machine.
        TimeSpan leaseDuration = TimeSpan.FromSeconds(5);
        await using var proxy = new TcpProxy("127.0.0.1", new Npgsql.NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member cutOff = await JoinAsync(o => o.LeaseDuration = leaseDuration, port: proxy.Port);
        Member other = await JoinAsync(o => o.LeaseDuration = leaseDuration);
        PostgresQueue<int> queue = cutOff.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(1);
        PostgresDelivery<int> first = await queue.GetAsync();

        var clock = Stopwatch.StartNew();
        proxy.Freeze();
        TimeSpan lostAt = TimeSpan.MaxValue;
        using CancellationTokenRegistration onLost = first.Lost.Register(() => lostAt = clock.Elapsed);

        await using PostgresDelivery<int> again = await other.Coordinator.CreateQueue<int>("numbers").GetAsync(Bound);
        TimeSpan takenAt = clock.Elapsed;
        again.Attempt.Should().Be(2);
        await WaitForLostAsync(first.Lost);
        lostAt.Should().BeLessThanOrEqualTo(leaseDuration);
        lostAt.Should().BeLessThan(takenAt, "the first consumer is told before anyone else gets the item");

        proxy.Thaw();
        await FluentActions.Awaiting(async () => await first.CompleteAsync()).Should().ThrowAsync<PostgresLeaseLostException>();
        await again.CompleteAsync();
        (await other.Coordinator.CreateQueue<int>("numbers").UnfinishedAsync()).Should().Be(0);
    }

    [PostgresRestartFact]
    public async Task ServerRestart_FailsWaitingGets_LosesNothing_AndLaterCallsWork()
    {
        using var waiters = new MetricCollector<long>(null, "AsyncPrimitives.Postgres", "asynctools.waiters");
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> empty = b.Coordinator.CreateQueue<int>("empty");
        await queueA.PutManyAsync([1, 2]);
        PostgresDelivery<int> delivered = await queueA.GetAsync();
        Task<PostgresDelivery<int>> waiting = empty.GetAsync().AsTask();

        // Restart only once the getter sleeps (it asked the server, found nothing, and waits): a restart during its
        // first call would only make that call start again on a new session, as a wait that holds nothing may.
        await EventuallyAsync(
            () => Task.FromResult(waiters.GetMeasurementSnapshot()
                .Where(m => Equals(m.Tags.GetValueOrDefault("asynctools.name"), "empty")).Sum(m => m.Value) == 1),
            "the getter sleeps");

        Server.Restart();

        await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        await WaitForLostAsync(delivered.Lost);
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        var items = new List<(int Item, int Attempt)>();
        for (int i = 0; i < 2; i++)
        {
            await using PostgresDelivery<int> delivery = await queueB.GetAsync().AsTask().WaitAsync(Bound);
            items.Add((delivery.Item, delivery.Attempt));
            await delivery.CompleteAsync();
        }

        items.Should().BeEquivalentTo([(1, 2), (2, 1)], "the delivered item comes back; the other was never delivered");
        (await queueA.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task DisposingTheCoordinator_GivesItsDeliveriesBack()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("numbers");
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync();

        await a.Coordinator.DisposeAsync();

        await WaitForLostAsync(delivery.Lost);
        await using PostgresDelivery<int> again = await b.Coordinator.CreateQueue<int>("numbers").GetAsync(TimeSpan.Zero);
        again.Attempt.Should().Be(2);
    }

    [PostgresFact]
    public async Task ACompletion_FailedByTheServerToBreakADeadlock_IsTriedAgain_AndCompletes()
    {
        // A transaction of the application's own locks the second of two deliveries, the batch completion locks the
        // first and waits for the second, then the application's transaction asks for the first: a deadlock. The server
        // fails the statement whose deadlock check runs first: the completion's, after 2 s (the application's waits an
        // hour), so the application's statement is certainly waiting by then. The completion's call is tried again once
        // the other has gone on.
        Member member = await JoinAsync(connection: b => b.Options = "-c deadlock_timeout=2000");
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("numbers");
        await queue.PutManyAsync([1, 2]);
        IReadOnlyList<PostgresDelivery<int>> deliveries = await queue.GetManyAsync(2, Bound);
        long[] ids = [.. deliveries.Select(d => d.Id).Order()];

        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(transaction, "SET LOCAL deadlock_timeout = '1h'");
        await ExecuteAsync(transaction, $"SELECT id FROM @schema.queue_items WHERE id = {ids[1]} FOR UPDATE");

        Task completion = queue.CompleteManyAsync(deliveries).AsTask();
        await WaitsForALockAsync(member, "the completion waits for the second item");
        await ExecuteAsync(transaction, $"SELECT id FROM @schema.queue_items WHERE id = {ids[0]} FOR UPDATE");
        await transaction.CommitAsync();

        await completion.WaitAsync(Bound);
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    [PostgresFact]
    public async Task AbandonAsync_OfALostDelivery_WhileItsCompletionIsInProgress_ThrowsInProgress()
    {
        var time = new CountingTimeProvider();
        Member member = await JoinAsync(o => o.TimeProvider = time);
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("jobs");
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync(Bound);

        Task completing;
        Exception? abandonFailure = null;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {delivery.Id} FOR UPDATE");
            completing = delivery.CompleteAsync().AsTask();
            await WaitsForALockAsync(member, "the completion waits for the item's row");
            time.Advance(member.Coordinator.LeaseDuration); // the delivery's local deadline passes: Lost fires
            await WaitForLostAsync(delivery.Lost);
            try
            {
                await delivery.AbandonAsync();
            }
            catch (Exception e)
            {
                abandonFailure = e;
            }

            await hold.CommitAsync();
        }

        try
        {
            await completing.WaitAsync(Bound);
        }
        catch (PostgresLeaseLostException)
        {
        }

        abandonFailure.Should().BeOfType<InvalidOperationException>(
            $"a completion of the delivery was in progress; the delivery ended up {delivery}");
    }
}
