using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A join waiting in one process must be woken when the last unfinished items go away in others at the same moment,
/// whichever way each goes: a completion, or a move to the dead letters.
/// </summary>
public sealed class QueueJoinWakeTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// "Waits until nothing is unfinished: every item put has been completed (or dead-lettered, or dropped by an
    /// immediate shutdown), by any process" (PostgresQueue.JoinAsync); "`JoinAsync` waits until that is zero (woken by the
    /// completion of the last one, in any process; a join that starts in the same instant as that completion sees it at
    /// its next poll)" (docs/scale-out.md); "Waits are woken within milliseconds, from any process. | After ... a
    /// completion that empties a queue a join waits for" (docs/scale-out.md, the guarantees' table); AbandonAsync: "moves
    /// to the dead letters if this was its MaxAttempts-th delivery" (PostgresDelivery). A join waits in a third process
    /// for the last two items: a read loop in one process completes its item (its call then goes on, here held after its
    /// count by a give-back that waits for a dead letter's key, as in QueueRaceTests), and meanwhile a consumer in another
    /// process abandons the other item on its last attempt, which moves it to the dead letters, commits, and wakes the
    /// join. The join looks again while the loop's completion has not committed (so it still counts that item) and
    /// sleeps. When the loop's call commits, the completion of the last unfinished item has happened, well after the join
    /// started: the join must be woken; its polls never come here. (The completion counted before the abandonment had
    /// committed, and an abandonment does not count in turn with completions.)
    /// </summary>
    [PostgresFact]
    public Task ACompletionAndAnAbandonmentToTheDeadLetters_OfTheLastItems_AtTheSameTime_WakeTheJoin() =>
        CompletionAndDeadLetterOfTheLastItemsAsync((_, delivery) => delivery.AbandonAsync().AsTask());

    /// <summary>
    /// The same when the other item goes to the dead letters because its holder's coordinator is disposed (its session
    /// ends, and the server moves its delivery on its last attempt to the dead letters: "or dead-lettered", as
    /// JoinAsync says) while the read loop's completion has not committed: the disposal wakes the join, which looks
    /// again too early, and the loop's commit must then wake it.
    /// </summary>
    [PostgresFact]
    public Task ACompletionAndADisposalThatDeadLettersTheLastItems_AtTheSameTime_WakeTheJoin() =>
        CompletionAndDeadLetterOfTheLastItemsAsync((holder, _) => holder.Coordinator.DisposeAsync().AsTask());

    /// <summary>The scenario of the test above; <paramref name="deadLetter"/> moves the holder's delivery (on its last
    /// attempt) to the dead letters.</summary>
    private async Task CompletionAndDeadLetterOfTheLastItemsAsync(Func<Member, PostgresDelivery<int>, Task> deadLetter)
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

        Task joined = queue.JoinAsync().AsTask();
        await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins") == 1, "the join is recorded");
        joined.IsCompleted.Should().BeFalse("two items are unfinished");

        Task<bool> next;
        Task deadLettering;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            // Holds off the expired item's move to the dead letters (its key is taken, not yet committed).
            await ExecuteAsync(hold,
                "INSERT INTO @schema.queue_dead_letters (id, queue, priority, payload, enqueued_at, attempts, reason) " +
                $"VALUES ({expired.Id}, 'elsewhere', 0, '0', now(), 1, 'held')");
            next = loop.MoveNextAsync().AsTask(); // completes item 1 (and counts), then gives the expired one back
            await WaitsForALockAsync(reader, "the loop's call, past its completion, waits for the dead letter's key");

            // Meanwhile, in another process, the other item goes to the dead letters (its last attempt): it commits,
            // or it waits at the server (for the loop's call, were the two to take turns).
            string before = await ScalarAsync<string>("SELECT clock_timestamp()::text");
            deadLettering = deadLetter(holder, lastHeld);
            await Task.WhenAny(deadLettering, WaitsForALockAsync(holder, "the move to the dead letters waits at the server")).WaitAsync(Bound);
            if (deadLettering.IsCompleted)
            {
                await deadLettering;
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

        await deadLettering.WaitAsync(Bound);
        try
        {
            await EventuallyAsync(
                async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_items") == 0, "the loop's call has committed");
            next.IsCompleted.Should().BeFalse("nothing is left to take, and the queue is not shut down: the loop waits");
            (await queue.UnfinishedAsync()).Should().Be(0, "one item was completed, and the others are dead letters");
            await joined.WaitAsync(Bound); // the completion of the last one wakes the join
        }
        finally
        {
            await queue.ShutdownAsync(); // the loop ends (it waits for its next item), and can be disposed
            (await next.WaitAsync(Bound)).Should().BeFalse();
        }
    }
}
