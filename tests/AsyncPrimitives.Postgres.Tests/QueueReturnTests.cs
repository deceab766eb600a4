using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// The give-back of a batch's readable items when another item of the batch cannot be read: back in line without
/// counting an attempt, "when the caller still holds it". A lease that expired (or whose session ended) before that
/// give-back reaches its row is no longer held: the others already count it as what a reclaim makes of it.
/// </summary>
public sealed class QueueReturnTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// "DeadLetterCountAsync: The items of this queue moved to the dead-letter table (delivered MaxAttempts times without
    /// completion), and those whose last delivery expired" (PostgresQueue). A get takes two items with MaxAttempts = 1;
    /// the first cannot be read, so the batch is given back: the first counted (to the dead letters), the second not.
    /// The first one's give-back waits at the server (here for the key of its dead letter, held by the test), and
    /// meanwhile the second one's lease expires (played by the test: it ends at the server's present moment). Its last
    /// delivery expired: it is counted as a dead letter, and must stay one, not come back in line with its attempt
    /// taken back.
    /// </summary>
    [PostgresFact]
    public async Task AReadableItemOfABatchGivenBack_AfterItsLeaseExpired_StaysADeadLetter_AsCounted()
    {
        var time = new CountingTimeProvider(); // no heartbeat, no local deadline: the server alone decides
        Member member = await JoinAsync(o => { o.TimeProvider = time; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        PostgresQueue<string> strings = member.Coordinator.CreateQueue<string>("jobs");
        PostgresQueue<int> ints = member.Coordinator.CreateQueue<int>("jobs", new PostgresQueueOptions { MaxAttempts = 1 });
        await strings.PutAsync("not a number");
        await ints.PutAsync(2);
        long unreadable = await ScalarAsync<long>("SELECT min(id) FROM @schema.queue_items");
        long readable = await ScalarAsync<long>("SELECT max(id) FROM @schema.queue_items");

        Task get;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            // Holds off the unreadable item's move to the dead letters (its key is taken, not yet committed).
            await HoldDeadLetterKeyAsync(hold, unreadable);
            get = ints.GetManyAsync(2, Bound).AsTask();
            await WaitsForALockAsync(member, "the unreadable item's give-back waits for its dead letter's key");

            // Time passes at the server: the readable item's lease, on its last attempt, ends now.
            await ExpireLeasesNowAsync(readable);
            (await ints.DeadLetterCountAsync()).Should().Be(1, "the readable item's last delivery expired");
            (await ints.CountAsync()).Should().Be(0, "nothing waits");
            await hold.RollbackAsync();
        }

        await FluentActions.Awaiting(() => get.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        (await ints.DeadLetterCountAsync()).Should().Be(2,
            "the unreadable item was abandoned on its last attempt, and the readable one's last delivery expired");
        (await ints.CountAsync()).Should().Be(0, "a delivery counted as a dead letter does not come back in line");
    }
}
