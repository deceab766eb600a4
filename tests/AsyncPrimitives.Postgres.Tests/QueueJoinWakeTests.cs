using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A join waiting in one process must be woken when the last unfinished items go away in others at the same moment,
/// whichever way each goes: a completion, or a move to the dead letters. "Waits until nothing is unfinished: every item
/// put has been completed (or dead-lettered, or dropped by an immediate shutdown), by any process"
/// (PostgresQueue.JoinAsync); "`JoinAsync` waits until that is zero (woken by the completion of the last one, or its
/// move to the dead letters by an abandonment or a coordinator's end, in any process, even when several end the last
/// items at once; a join that starts while that completion is at the server, not yet committed, sees it at its next
/// poll)" and "Waits are woken within milliseconds, from any process. | After ... a completion that empties a queue a
/// join waits for" (docs/scale-out.md). In each test a read loop completes item 1 in a call that then goes on (held,
/// not committed, by a give-back of an expired item whose dead letter's key the test holds: any step after the
/// completion's count, or just the time the rest of the call takes before it commits), while another process ends
/// item 2, the other last item. Once both have committed nothing is unfinished, and the join, whose polls never come
/// here, must be woken.
/// </summary>
public sealed class QueueJoinWakeTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>Two completions at the same time: each counts before the other has committed, so each would see the
    /// other's item unfinished if they did not count in turn.</summary>
    [PostgresFact]
    public Task TwoCompletionsOfTheLastItems_AtTheSameTime_WakeTheJoin() =>
        LastItemsEndedAtOnceAsync((_, delivery) => delivery.CompleteAsync().AsTask(), endWakesTheJoin: false);

    /// <summary>The other item is abandoned on its last attempt ("moves to the dead letters if this was its
    /// MaxAttempts-th delivery", PostgresDelivery.AbandonAsync), which wakes the join once committed: the join must not
    /// look again before the loop's completion has committed and then sleep.</summary>
    [PostgresFact]
    public Task ACompletionAndAnAbandonmentToTheDeadLetters_OfTheLastItems_AtTheSameTime_WakeTheJoin() =>
        LastItemsEndedAtOnceAsync((_, delivery) => delivery.AbandonAsync().AsTask(), endWakesTheJoin: true);

    /// <summary>The other item goes to the dead letters because its holder's coordinator is disposed (its session
    /// ends, and the server moves its delivery on its last attempt to the dead letters), which wakes the join once
    /// committed.</summary>
    [PostgresFact]
    public Task ACompletionAndADisposalThatDeadLettersTheLastItems_AtTheSameTime_WakeTheJoin() =>
        LastItemsEndedAtOnceAsync((holder, _) => holder.Coordinator.DisposeAsync().AsTask(), endWakesTheJoin: true);

    /// <summary>The join starts after the loop's completion (which saw no join) and before the other completion
    /// (which sees it, and counts): the later completion began well after the join was recorded, so it must count
    /// after the earlier one has committed.</summary>
    [PostgresFact]
    public Task TwoCompletionsOfTheLastItems_TheSecondAfterTheJoinIsRecorded_WakeTheJoin() =>
        LastItemsEndedAtOnceAsync((_, delivery) => delivery.CompleteAsync().AsTask(), endWakesTheJoin: false, joinAfterTheLoopsCompletion: true);

    /// <summary>
    /// "A waiting join is recorded on the server: only while one waits does a completion look whether it emptied the
    /// queue" (docs/scale-out.md). A join of a session that ended (its process crashed, so nothing removed its row) waits
    /// for nothing: a completion must not count in the exclusive turn for it, which would make every completion of the
    /// queue wait for the one before it to commit until another join removes the row. Here the test holds the count turn
    /// shared, as a completion in flight does: the completion goes ahead.
    /// </summary>
    [PostgresFact]
    public async Task ACompletion_WithOnlyAJoinOfAnEndedSessionRecorded_DoesNotWaitForTheCompletionsInFlight()
    {
        Member member = await JoinAsync();
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("jobs");
        await queue.PutAsync(1);
        PostgresDelivery<int> delivery = await queue.GetAsync(Bound);
        // A session key no connection holds: the session of a crashed process.
        await ScalarAsync<int>(
            "INSERT INTO @schema.queue_joins (id, queue, owner, session) " +
            $"VALUES (nextval('@schema.ids'), 'jobs', gen_random_uuid(), {Random.Shared.NextInt64(1, long.MaxValue)}); SELECT 1");

        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(hold, "SELECT pg_advisory_xact_lock_shared(hashtextextended('AsyncPrimitives.Postgres @schema queue-joins jobs', 0))");
        Task completion = delivery.CompleteAsync().AsTask();
        await Task.WhenAny(completion, WaitsForALockAsync(member, "the completion waits for the count turn")).WaitAsync(Bound);
        completion.IsCompleted.Should().BeTrue("no join waits: the completion counts nothing, and need not wait for another");
        await completion;
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    /// <summary>The scenario of the tests above. <paramref name="end"/> ends item 2 (held, on its last attempt, by the
    /// member given); <paramref name="endWakesTheJoin"/>: it wakes the join itself once committed (a move to the dead
    /// letters), so that, were it to commit before the loop's completion, the join would look again too early.</summary>
    private async Task LastItemsEndedAtOnceAsync(
        Func<Member, PostgresDelivery<int>, Task> end, bool endWakesTheJoin, bool joinAfterTheLoopsCompletion = false)
    {
        var readerTime = new CountingTimeProvider(); // no heartbeat: the server alone decides
        Member reader = await JoinAsync(o => { o.TimeProvider = readerTime; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        var holderTime = new CountingTimeProvider();
        Member holder = await JoinAsync(o => { o.TimeProvider = holderTime; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        // Holds the expired delivery: a process of its own, so that the holder's end (one of the scenarios) need not
        // wait for that row, which the read loop's call holds while it waits.
        var staleTime = new CountingTimeProvider();
        Member stale = await JoinAsync(o => { o.TimeProvider = staleTime; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        var time = new CountingTimeProvider(); // the join's polls never come: only a wake-up can reach it
        Member other = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = TimeSpan.FromHours(1); });
        PostgresQueue<int> queueR = reader.Coordinator.CreateQueue<int>("jobs");
        PostgresQueue<int> queueH = holder.Coordinator.CreateQueue<int>("jobs", new PostgresQueueOptions { MaxAttempts = 1 });
        PostgresQueue<int> queueS = stale.Coordinator.CreateQueue<int>("jobs", new PostgresQueueOptions { MaxAttempts = 1 });
        PostgresQueue<int> queue = other.Coordinator.CreateQueue<int>("jobs");
        await queue.PutManyAsync([1, 2, 3]);

        await using IAsyncEnumerator<PostgresDelivery<int>> loop = queueR.ReadAllAsync().GetAsyncEnumerator();
        (await loop.MoveNextAsync().AsTask().WaitAsync(Bound)).Should().BeTrue();
        loop.Current.Item.Should().Be(1);
        PostgresDelivery<int> lastHeld = await queueH.GetAsync(Bound);
        lastHeld.Item.Should().Be(2);
        PostgresDelivery<int> expired = await queueS.GetAsync(Bound);
        expired.Item.Should().Be(3);
        await ExpireLeasesNowAsync(expired.Id); // its last attempt: a dead letter for everyone from now on
        (await queue.UnfinishedAsync()).Should().Be(2);

        Task? joined = null;
        if (!joinAfterTheLoopsCompletion)
        {
            joined = await StartJoinAsync(queue);
        }

        Task<bool> next;
        Task ending;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            // Holds off the expired item's move to the dead letters (its key is taken, not yet committed).
            await HoldDeadLetterKeyAsync(hold, expired.Id);
            next = loop.MoveNextAsync().AsTask(); // completes item 1, then gives the expired one back
            await WaitsForALockAsync(reader, "the loop's call, past its completion, waits for the dead letter's key");
            joined ??= await StartJoinAsync(queue); // counts two items: the loop's completion has not committed

            // Meanwhile, in another process, the other item ends: it commits, or it waits at the server (for the loop's
            // call, were the two to take turns).
            string before = await ScalarAsync<string>("SELECT clock_timestamp()::text");
            ending = end(holder, lastHeld);
            await Task.WhenAny(ending, WaitsForALockAsync(holder, "the other item's end waits at the server")).WaitAsync(Bound);
            if (ending.IsCompleted && endWakesTheJoin)
            {
                await ending;
                (await ScalarAsync<long>($"SELECT count(*) FROM @schema.queue_dead_letters WHERE id = {lastHeld.Id}")).Should().Be(1);

                // It woke the join, which looks again (the loop's completion not committed yet) and sleeps.
                await EventuallyAsync(
                    async () => joined.IsCompleted || await ScalarAsync<long>(
                        "SELECT count(*) FROM pg_stat_activity " +
                        $"WHERE application_name = '{other.Application}' AND query LIKE '%queue_join(%' AND state = 'idle' " +
                        $"AND state_change > '{before}'::timestamptz") > 0,
                    "the join has looked again");
                joined.IsCompleted.Should().BeFalse("the loop's completion had not committed when the join looked again");
            }

            await hold.RollbackAsync();
        }

        await ending.WaitAsync(Bound);
        try
        {
            await EventuallyAsync(
                async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_items") == 0, "the loop's call has committed");
            next.IsCompleted.Should().BeFalse("nothing is left to take, and the queue is not shut down: the loop waits");
            (await queue.UnfinishedAsync()).Should().Be(0, "items 1 and 2 ended, and item 3 is a dead letter");
            await joined.WaitAsync(Bound); // the last end woke the join
        }
        finally
        {
            await queue.ShutdownAsync(); // the loop ends (it waits for its next item), and can be disposed
            (await next.WaitAsync(Bound)).Should().BeFalse();
        }
    }

    /// <summary>Starts a join of <paramref name="queue"/> and returns it once it is recorded (and has counted).</summary>
    private async Task<Task> StartJoinAsync(PostgresQueue<int> queue)
    {
        Task joined = queue.JoinAsync().AsTask();
        await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins") == 1, "the join is recorded");
        joined.IsCompleted.Should().BeFalse("two items are unfinished");
        return joined;
    }
}
