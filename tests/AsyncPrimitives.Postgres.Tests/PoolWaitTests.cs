using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Calls held up before their statement ran: waiting for a connection of a full data source pool (the wait is not part
/// of what they get from the server: a lease counts from when its statement is sent), or at the server. A wait that
/// gives up there takes nothing and keeps nothing from the others: a getter woken for an item passes the wake on.
/// </summary>
public sealed class PoolWaitTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// A get or an acquire whose call waited for a pooled connection as long as its lease, then was answered at once, gets
    /// the item or the lock: the lease counts from when the call was sent (before, from before the wait, so the answer was
    /// taken for a late one: the item given back with its attempt counted, the permit given back, and the call failed).
    /// </summary>
    [PostgresTheory]
    [InlineData("get")]
    [InlineData("lock")]
    public async Task ACallThatWaitedForAPooledConnection_LongerThanTheLease_StillGetsWhatItWasGranted(string call)
    {
        var time = new CountingTimeProvider();
        Member consumer = await JoinWithASmallPoolAsync(time, TimeSpan.FromSeconds(10));
        Member producer = await JoinAsync();
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("jobs");
        await producer.Coordinator.CreateQueue<int>("jobs").PutAsync(7);
        await consumer.Coordinator.GetSessionAsync(CancellationToken.None); // the LISTEN connection: 1 of 2
        using var pending = new PendingConnectionRequests(consumer.Application);
        NpgsqlConnection busy = await consumer.Source.OpenConnectionAsync(); // 2 of 2

        Task<IAsyncDisposable?> calling = call == "get"
            ? queue.TryGetAsync().AsTask().ContinueWith(t => (IAsyncDisposable?)t.Result, TaskScheduler.Default)
            : consumer.Coordinator.CreateLock("job").TryAcquireAsync().AsTask().ContinueWith(t => (IAsyncDisposable?)t.Result, TaskScheduler.Default);
        await EventuallyAsync(() => Task.FromResult(pending.Count == 1), "the call waits for a pooled connection");
        time.Advance(TimeSpan.FromSeconds(10)); // the wait for a connection lasts a lease duration
        await busy.DisposeAsync();

        await using IAsyncDisposable? granted = await calling.WaitAsync(Bound);
        granted.Should().NotBeNull("the server granted it when the call ran, and answered at once: nothing was late");
        if (granted is PostgresDelivery<int> delivery)
        {
            (delivery.Item, delivery.Attempt).Should().Be((7, 1));
            await delivery.CompleteAsync();
        }
    }

    /// <summary>
    /// Two getters of one process sleep; a put of another process wakes the first, whose call then waits for a pooled
    /// connection, and the first getter is cancelled before its call was sent: it took nothing, and the wake it took goes
    /// to the other getter, which takes the item at once rather than at its next poll (an hour away here).
    /// </summary>
    [PostgresFact]
    public async Task AGetterWokenByAPut_CancelledBeforeItsCallWasSent_PassesTheWakeOn()
    {
        var time = new CountingTimeProvider(); // the poll interval (1 h) never passes: only wake-ups can serve the item
        Member consumer = await JoinWithASmallPoolAsync(time, TimeSpan.FromMinutes(10));
        Member producer = await JoinAsync();
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("jobs");
        using var pending = new PendingConnectionRequests(consumer.Application);
        using var stopFirst = new CancellationTokenSource();
        using var stopSecond = new CancellationTokenSource();
        (Task<PostgresDelivery<int>> first, Task<PostgresDelivery<int>> second) = await TwoGettersAsleepAsync(queue, time, stopFirst.Token, stopSecond.Token);

        // The pool's other connection is busy with a call of the process held at the server.
        await using NpgsqlConnection blocker = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await blocker.BeginTransactionAsync();
        await ExecuteAsync(hold, "LOCK TABLE @schema.queue_dead_letters IN ACCESS EXCLUSIVE MODE");
        Task<long> count = consumer.Coordinator.CreateQueue<int>("other").CountAsync().AsTask();
        await WaitsForALockAsync(consumer, "a call of the process holds the pool's other connection");

        await producer.Coordinator.CreateQueue<int>("jobs").PutAsync(7);
        await EventuallyAsync(() => Task.FromResult(pending.Count == 1), "the woken getter's call waits for a pooled connection");
        stopFirst.Cancel(); // before its call was sent
        await FluentActions.Awaiting(() => first.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        await hold.CommitAsync();
        await count.WaitAsync(Bound);

        await TheSecondGetterTakesTheItemAsync(second, stopSecond, "the cancelled getter took nothing");
    }

    /// <summary>
    /// Two getters of one process sleep; a wake (as a put's NOTIFY) reaches the first, whose call is sent and waits at the
    /// server; the getter is cancelled meanwhile (the call runs on: it is never cancelled half-way), then the call's
    /// backend is terminated before the statement ran (its answer, 57P01, says it never ran; not tried again, as the token
    /// is cancelled). The first getter looked at nothing: the wake it took goes to the other getter, which takes the item
    /// at once rather than at its next poll (an hour away). The wake is sent by hand: a put's NOTIFY would wake the getter
    /// before the table could be held, and no lock holds up a take without holding up a put.
    /// </summary>
    [PostgresFact]
    public async Task AWokenGetterWhoseCallNeverRan_PassesTheWakeOn()
    {
        var time = new CountingTimeProvider(); // the poll interval (1 h) never passes: only wake-ups can serve the item
        Member consumer = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.PollInterval = TimeSpan.FromHours(1);
            o.LeaseDuration = TimeSpan.FromMinutes(10);
        });
        PostgresQueue<int> queue = consumer.Coordinator.CreateQueue<int>("jobs");
        using var stopFirst = new CancellationTokenSource();
        using var stopSecond = new CancellationTokenSource();
        (Task<PostgresDelivery<int>> first, Task<PostgresDelivery<int>> second) = await TwoGettersAsleepAsync(queue, time, stopFirst.Token, stopSecond.Token);

        await using (NpgsqlConnection blocker = await Admin.OpenConnectionAsync())
        {
            await using NpgsqlTransaction hold = await blocker.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
            // An item put (visible at commit), and the table held, so that the woken getter's call waits at the server.
            await ExecuteAsync(hold, "SELECT @schema.queue_put('jobs', ARRAY[0], ARRAY['7'::json])");
            await ExecuteAsync(hold, "LOCK TABLE @schema.queue_items IN ACCESS EXCLUSIVE MODE");

            consumer.Coordinator.Signals.Signal(queue.WakeKey); // as the put's NOTIFY would: wakes the first getter
            await WaitsForALockAsync(consumer, "the woken getter's call waits at the server");
            stopFirst.Cancel(); // the call was sent: it runs on
            (await ScalarAsync<long>(
                $"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{consumer.Application}' AND wait_event_type = 'Lock'"))
                .Should().Be(1);
            await FluentActions.Awaiting(() => first.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>(
                "the call was answered by the termination: it never ran, and took nothing");
            await hold.CommitAsync();
        }

        await TheSecondGetterTakesTheItemAsync(second, stopSecond, "the first getter's call never ran");
    }

    /// <summary>A coordinator on <paramref name="time"/> that polls once an hour (a wait that ends was woken), with leases of
    /// <paramref name="leaseDuration"/> and a data source pool of two connections: its LISTEN connection, and one for calls.</summary>
    private Task<Member> JoinWithASmallPoolAsync(CountingTimeProvider time, TimeSpan leaseDuration) => JoinAsync(
        o =>
        {
            o.TimeProvider = time;
            o.PollInterval = TimeSpan.FromHours(1);
            o.LeaseDuration = leaseDuration;
        },
        connection: b =>
        {
            b.MaxPoolSize = 2;
            b.Timeout = 120; // a call waiting for a pooled connection would give up only after this
        });

    /// <summary>The other getter takes the item (7), on its first attempt (<paramref name="because"/>), and completes it;
    /// it is stopped however that ends.</summary>
    private static async Task TheSecondGetterTakesTheItemAsync(Task<PostgresDelivery<int>> second, CancellationTokenSource stopSecond, string because)
    {
        try
        {
            await using PostgresDelivery<int> delivery = await second.WaitAsync(Bound);
            (delivery.Item, delivery.Attempt).Should().Be((7, 1), because);
            await delivery.CompleteAsync();
        }
        finally
        {
            stopSecond.Cancel();
        }
    }

    /// <summary>Opens the session of <paramref name="queue"/>'s coordinator (on <paramref name="time"/>), then starts two
    /// gets, one after the other, each returned once it has looked, found nothing, and sleeps.</summary>
    private static async Task<(Task<PostgresDelivery<int>> First, Task<PostgresDelivery<int>> Second)> TwoGettersAsleepAsync(
        PostgresQueue<int> queue, CountingTimeProvider time, CancellationToken stopFirst, CancellationToken stopSecond)
    {
        (await queue.TryGetAsync()).Should().BeNull(); // the session is open, and its heartbeat waits
        await time.WaitForArmedTimersAsync(1).WaitAsync(Bound);
        int armed = time.ArmedTimers;
        Task<PostgresDelivery<int>> first = queue.GetAsync(stopFirst).AsTask();
        await time.WaitForArmedTimersAsync(armed + 1).WaitAsync(Bound);
        Task<PostgresDelivery<int>> second = queue.GetAsync(stopSecond).AsTask();
        await time.WaitForArmedTimersAsync(armed + 2).WaitAsync(Bound);
        return (first, second);
    }
}
