using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Wake-ups: a NOTIFY is sent after the change it announces has committed, never inside the transaction that makes
/// it (where it would take the server-wide notification lock at commit), and requests made while one is in flight
/// are coalesced into the next.
/// </summary>
public sealed class WakeUpTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task PutInTheCallersTransaction_NotifiesFromAnotherSession_AfterTheCommit()
    {
        Member producer = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        PostgresQueue<int> queue = producer.Coordinator.CreateQueue<int>("numbers");
        await using NpgsqlDataSource business = Server.CreateDataSource(b => b.ApplicationName = "business");
        await using NpgsqlConnection listener = await Server.CreateDataSource().OpenConnectionAsync();
        var received = new TaskCompletionSource<(int Pid, string Payload)>(TaskCreationOptions.RunContinuationsAsynchronously);
        listener.Notification += (_, e) => received.TrySetResult((e.PID, e.Payload));
        await using (var listen = new NpgsqlCommand($"LISTEN \"{Schema}\"", listener))
        {
            await listen.ExecuteNonQueryAsync();
        }

        int businessPid;
        await using (NpgsqlConnection connection = await business.OpenConnectionAsync())
        {
            businessPid = connection.ProcessID;
            await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync();
            await queue.PutAsync(1, transaction);
            await transaction.CommitAsync();
        }

        Task<bool> waiting = listener.WaitAsync(Bound);
        (int Pid, string Payload) notification = await received.Task.WaitAsync(Bound);
        await waiting;
        notification.Payload.Should().EndWith(" q:numbers", "a notification names its sender, then the key");
        notification.Pid.Should().NotBe(businessPid, "the put's transaction carries no NOTIFY");
    }

    [PostgresFact]
    public async Task DisposingACoordinatorThatHeldADelivery_NotifiesOnlyOnceTheItemIsBackInLine()
    {
        // A wait woken before the item is back would find nothing and sleep to its next poll (here an hour).
        Member a = await JoinAsync();
        Member b = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        await queueA.PutAsync(1);
        PostgresDelivery<int> held = await queueA.GetAsync(Bound);
        Task<PostgresDelivery<int>> waiting = b.Coordinator.CreateQueue<int>("numbers").GetAsync().AsTask();

        await using Listening listening = await ListenAsync();
        (NpgsqlConnection listener, ConcurrentQueue<string> payloads) = (listening.Connection, listening.Payloads);

        Task disposing;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction rowLock = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            // Ending a's session waits for the item's row: what a's coordinator announces meanwhile is announced early.
            await ExecuteAsync(rowLock, $"SELECT 1 FROM @schema.queue_items WHERE id = {held.Id} FOR UPDATE");
            disposing = a.Coordinator.DisposeAsync().AsTask();
            await WaitsForALockAsync(a, "ending the session waits for the row");
            await a.Coordinator.Notifier.FlushAsync().WaitAsync(Bound);
            await ReceivedUpToAsync(listener, payloads, "marker");
            payloads.Should().Equal(["marker"], "nothing is announced before the item is back in line");
            await rowLock.RollbackAsync();
        }

        await disposing.WaitAsync(Bound);
        await using PostgresDelivery<int> delivery = await waiting.WaitAsync(Bound);
        delivery.Attempt.Should().Be(2);
    }

    /// <summary>A connection that LISTENs on the schema's channel (its own pool), and what it has received so far.</summary>
    private async Task<Listening> ListenAsync()
    {
        var listening = new Listening(await Server.CreateDataSource().OpenConnectionAsync());
        listening.Connection.Notification += (_, e) => listening.Payloads.Enqueue(e.Payload);
        await using (var listen = new NpgsqlCommand($"LISTEN \"{Schema}\"", listening.Connection))
        {
            await listen.ExecuteNonQueryAsync();
        }

        return listening;
    }

    private sealed class Listening(NpgsqlConnection connection) : IAsyncDisposable
    {
        public NpgsqlConnection Connection => connection;

        public ConcurrentQueue<string> Payloads { get; } = new();

        public ValueTask DisposeAsync() => connection.DisposeAsync();
    }

    /// <summary>Sends <paramref name="marker"/> on the schema's channel and reads what <paramref name="listener"/> receives
    /// until it arrives: notifications are delivered in the order of their commits.</summary>
    private async Task ReceivedUpToAsync(NpgsqlConnection listener, ConcurrentQueue<string> payloads, string marker)
    {
        await using (NpgsqlCommand notify = Admin.CreateCommand($"SELECT pg_notify('{Schema}', '{marker}')"))
        {
            await notify.ExecuteNonQueryAsync();
        }

        while (!payloads.Contains(marker))
        {
            (await listener.WaitAsync(Bound)).Should().BeTrue("the marker arrives");
        }
    }

    [PostgresFact]
    public async Task Notifier_WhileOneNotifyIsInFlight_CoalescesTheRequestsIntoOneMore()
    {
        _ = await JoinAsync(); // installs the schema
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        await using NpgsqlDataSource slow = Server.CreateDataSource(b => b.Port = proxy.Port);
        var notifier = new Notifier(new Database(slow, Schema), Guid.NewGuid());
        await using (await slow.OpenConnectionAsync())
        {
            // A pooled connection exists, so the first NOTIFY reaches the proxy and waits there.
        }

        proxy.Freeze();
        notifier.Request("q:first");
        await EventuallyAsync(() => Task.FromResult(proxy.HeldBack > 0), "the first NOTIFY is on its way (held by the proxy)");
        for (int i = 0; i < 50; i++)
        {
            notifier.Request("q:item-" + (i % 5));
        }

        proxy.Thaw();
        await notifier.FlushAsync().WaitAsync(Bound);
        notifier.Sent.Should().Be(2, "the 50 requests made meanwhile went out together, in one statement");
    }

    /// <summary>A shutdown's wake-up goes out in a notification of its own, apart from the puts' of its queue (those
    /// requested while a NOTIFY is in flight go out once, and a process signals a key once per notification).</summary>
    [PostgresFact]
    public async Task AShutdown_IsAnnouncedApartFromThePutsOfItsQueue()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("jobs");
        await using Listening listening = await ListenAsync();
        (NpgsqlConnection listener, ConcurrentQueue<string> payloads) = (listening.Connection, listening.Payloads);

        await queue.PutManyAsync([1, 2, 3]);
        await queue.ShutdownAsync();
        await a.Coordinator.Notifier.FlushAsync().WaitAsync(Bound);
        await ReceivedUpToAsync(listener, payloads, "marker");

        string tag = a.Coordinator.Notifier.Tag;
        payloads.Should().Contain(tag + " q:jobs", "the put is announced").And.Contain(tag + " !q:jobs", "so is the shutdown, apart");
    }

    /// <summary>
    /// Three items and the shutdown committed by another process, announced as its coordinator does when the put's and
    /// the shutdown's wake-ups are sent in one statement: the getter the first notification wakes takes items (fewer
    /// than it asked for, so it does not wake the next getter); the second notification wakes the other getter, which
    /// ends at once (with an item or the shutdown) rather than at its poll, an hour away on a clock that does not move.
    /// </summary>
    [PostgresFact]
    public async Task APutAndAShutdownAnnouncedTogether_WakeEveryGetterOfTheQueue()
    {
        var time = new CountingTimeProvider();
        (_, PostgresQueue<int> queue, int heartbeat) = await JoinOnTheTestsClockAsync(time, TimeSpan.FromHours(1));
        Task<IReadOnlyList<PostgresDelivery<int>>> many = queue.GetManyAsync(5).AsTask();
        await time.WaitForArmedTimersAsync(heartbeat + 1).WaitAsync(Bound); // it looked, found nothing, and sleeps
        Task<PostgresDelivery<int>> one = queue.GetAsync().AsTask();
        await time.WaitForArmedTimersAsync(heartbeat + 2).WaitAsync(Bound);

        await ScalarAsync<long>("SELECT @schema.queue_put('jobs', ARRAY[0, 0, 0], ARRAY['1', '2', '3']::json[])");
        await ScalarAsync<int>("SELECT 1 FROM (SELECT @schema.queue_shutdown('jobs', false)) s");
        await ScalarAsync<int>($"SELECT 1 FROM (SELECT pg_notify('{Schema}', 'other q:jobs'), pg_notify('{Schema}', 'other !q:jobs')) n");

        var items = (await many.WaitAsync(Bound)).Select(d => d.Item).ToList();
        Exception? ended = await Record.ExceptionAsync(async () => items.Add((await one.WaitAsync(Bound)).Item));
        if (ended is not QueueShutDownException)
        {
            ended.Should().BeNull("the second getter ends at once, with an item or the shutdown");
        }

        items.Should().BeEquivalentTo([1, 2, 3], "each item is delivered once");
    }

    [PostgresFact]
    public async Task CompletionThatEmptiesTheQueue_NotifiesTheJoinKey_OnlyWhileAJoinWaits()
    {
        Member a = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        Member b = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        await using Listening listening = await ListenAsync();
        (NpgsqlConnection listener, ConcurrentQueue<string> payloads) = (listening.Connection, listening.Payloads);

        // Everything sent before a marker of our own has arrived once the marker has (one channel, commit order).
        async Task<string[]> ReceivedAsync(string marker)
        {
            await a.Coordinator.Notifier.FlushAsync().WaitAsync(Bound);
            await using (NpgsqlCommand notify = Admin.CreateCommand($"SELECT pg_notify('{Schema}', '{marker}')"))
            {
                await notify.ExecuteNonQueryAsync();
            }

            using var bound = new CancellationTokenSource(Bound);
            while (!payloads.Contains(marker))
            {
                await listener.WaitAsync(bound.Token);
            }

            string[] received = [.. payloads];
            payloads.Clear();
            return received;
        }

        await queueA.PutAsync(1);
        await (await queueA.GetAsync()).CompleteAsync();
        (await ReceivedAsync("marker-1")).Should().NotContain(p => p.EndsWith(" j:numbers"), "no join waits");

        await queueA.PutAsync(2);
        Task joined = queueB.JoinAsync().AsTask();
        await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins") == 1, "the join is recorded");
        await (await queueA.GetAsync()).CompleteAsync();
        await joined.WaitAsync(Bound);
        (await ReceivedAsync("marker-2")).Should().Contain(p => p.EndsWith(" j:numbers"), "a join waited in another process");
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins")).Should().Be(0, "the join removed its row as it ended");
    }

    [Fact]
    public void Notifier_KeyOf_IgnoresItsOwnNotifications_AndReadsOthersKeys()
    {
        var mine = new Notifier(null!, Guid.NewGuid());
        var theirs = new Notifier(null!, Guid.NewGuid());

        mine.KeyOf(mine.Tag + " q:jobs").Should().BeNull("its own waits were signalled when it sent it");
        mine.KeyOf(theirs.Tag + " q:jobs with spaces").Should().Be("q:jobs with spaces");
        mine.KeyOf(theirs.Tag + " !q:jobs!").Should().Be("q:jobs!", "a key requested apart is the key");
        mine.KeyOf(mine.Tag + " !q:jobs").Should().BeNull();
    }

    /// <summary>
    /// Ten waits on one lock in one process, held by another: between wake-ups only the first in line asks the server
    /// again (the poll, the backstop for a missed notification); the others cannot be served before it and sleep, so
    /// hundreds of waits on one name do not take the pool's connections and the name's turn every poll interval. When
    /// the first leaves (cancelled), the next one polls in its stead; and every wait is still served, in line.
    /// </summary>
    [PostgresFact]
    public async Task ManyWaitsOnOneLockInOneProcess_OnlyTheFirstInLinePolls_AndTheNextTakesOverWhenItLeaves()
    {
        const int Waits = 10;
        Member holder = await JoinAsync();
        Member member = await JoinPollingOftenAsync();
        PostgresLease held = await holder.Coordinator.CreateLock("busy").AcquireAsync(Bound);
        PostgresLock theLock = member.Coordinator.CreateLock("busy");
        using var cancelFirst = new CancellationTokenSource();
        Task<PostgresLease> first = theLock.AcquireAsync(cancelFirst.Token).AsTask();
        await WaitersAsync(1);
        List<Task<PostgresLease>> rest = await QueueOneAfterAnotherAsync(Waits - 1, () => theLock.AcquireAsync(), queued: 1);
        await CountCallsInLineAsync();

        await EventuallyAsync(async () => await CallsOfPlaceAsync(0) >= 5, "the first in line polls");
        long behind = await ScalarAsync<long>(
            "SELECT count(*) FROM @schema.calls WHERE ticket > (SELECT min(ticket) FROM @schema.permit_waiters)");
        behind.Should().BeLessThanOrEqualTo(1, "while the first polled five times, the nine behind it did not poll (one may have been asking already)");

        cancelFirst.Cancel();
        await FluentActions.Awaiting(() => first).Should().ThrowAsync<OperationCanceledException>();
        await WaitersAsync(Waits - 1);
        await EventuallyAsync(async () => await CallsOfPlaceAsync(0) >= 5, "the wait now first polls in its stead");

        await held.ReleaseAsync();
        await ServedInLineAsync(rest, held.FencingToken);
    }

    /// <summary>
    /// A semaphore of two, full with another process's leases; five waits here: the first two in line poll. When the
    /// first is granted by its poll (a lease expired: nothing wakes the others) and leaves the line, the third is among
    /// the first two: it must poll from then on (a missed notification of the next release would otherwise leave only
    /// one wait to notice it).
    /// </summary>
    [PostgresFact]
    public async Task ManyWaitsOnOneSemaphoreInOneProcess_TheFirstMaxCountPoll_AndTheNextTakesOverWhenOneIsGrantedByItsPoll()
    {
        Member holder = await JoinAsync();
        Member member = await JoinPollingOftenAsync();
        PostgresSemaphore full = holder.Coordinator.CreateSemaphore("busy", maxCount: 2);
        PostgresLease[] held = [await full.AcquireAsync(Bound), await full.AcquireAsync(Bound)];
        PostgresSemaphore semaphore = member.Coordinator.CreateSemaphore("busy", maxCount: 2);
        List<Task<PostgresLease>> waits = await QueueOneAfterAnotherAsync(5, () => semaphore.AcquireAsync(), queued: 0);
        await CountCallsInLineAsync();

        await EventuallyAsync(async () => await CallsOfPlaceAsync(1) >= 5, "the second in line polls");
        long behind = await ScalarAsync<long>(
            "SELECT count(*) FROM @schema.calls WHERE ticket > (SELECT ticket FROM @schema.permit_waiters ORDER BY ticket OFFSET 1 LIMIT 1)");
        behind.Should().BeLessThanOrEqualTo(1, "the three behind the first two did not poll");

        // One of the holder's leases expires on the server: no release, so no wake-up; the first wait's poll takes it.
        await ScalarAsync<int>(
            $"UPDATE @schema.permit_slots SET expires_at = now() - interval '1 second' WHERE token = {held[0].FencingToken}; SELECT 1");
        await using (PostgresLease granted = await waits[0].WaitAsync(Bound))
        {
            await WaitersAsync(4);
            await EventuallyAsync(async () => await CallsOfPlaceAsync(1) >= 5, "the wait now second in line polls");
        }

        await held[1].ReleaseAsync();
        await ServedInLineAsync(waits.Skip(1), held[1].FencingToken);
    }

    /// <summary>
    /// Ten getters of one queue in one process, on an empty queue: between wake-ups they take turns, one call per poll
    /// interval among them, not one each (so a hundred consumers of a queue do not take the pool's connections every
    /// poll interval); and every getter is still served, each item once. The clock is the test's: each step of a poll
    /// interval fires every getter's timer, and waits until all ten sleep again.
    /// </summary>
    [PostgresFact]
    public async Task ManyGettersOfOneQueueInOneProcess_TakeTurns_OneCallPerPollInterval()
    {
        const int Getters = 10;
        var time = new CountingTimeProvider();
        (Member member, PostgresQueue<int> queue, int heartbeat) = await JoinOnTheTestsClockAsync(time, TimeSpan.FromSeconds(1));
        using var takes = new TakesByGetter(Scope.Schema);
        var getters = new List<Task<PostgresDelivery<int>>>();
        for (int i = 0; i < Getters; i++)
        {
            int getter = i;
            getters.Add(takes.Run(getter, () => queue.GetAsync().AsTask()));
            await time.WaitForArmedTimersAsync(heartbeat + getter + 1).WaitAsync(Bound); // it asked the server, found nothing, and sleeps
        }

        takes.Total.Should().Be(Getters);
        for (int interval = 1; interval <= 3; interval++)
        {
            time.Advance(member.Coordinator.PollInterval);
            await time.WaitForArmedTimersAsync(heartbeat + Getters).WaitAsync(Bound);
            takes.Total.Should().Be(Getters + interval, "one getter took the turn; the others' turn comes a poll interval later");
        }

        for (int item = 1; item <= Getters; item++)
        {
            await queue.PutAsync(item);
        }

        var served = new List<int>();
        foreach (Task<PostgresDelivery<int>> get in getters)
        {
            await using PostgresDelivery<int> delivery = await get.WaitAsync(Bound);
            served.Add(delivery.Item);
            await delivery.CompleteAsync();
        }

        served.Should().BeEquivalentTo(Enumerable.Range(1, Getters), "each item went to one getter");
    }

    /// <summary>
    /// A reading loop's call (which completes its last delivery and takes the next) is held up at the server (another
    /// transaction holds the delivered item's row); another getter of the process sleeps, and an item is put. The
    /// wake-up goes to the loop, in its call; the other getter's turn to poll still comes a poll interval after its own
    /// call, and it takes the item: a getter in a call that does not return does not hold up the others.
    /// </summary>
    [PostgresFact]
    public async Task AGetterWhoseCallIsHeldUp_DoesNotHoldUpTheOthersTurnToPoll()
    {
        Member member = await JoinAsync(o => o.PollInterval = TimeSpan.FromMilliseconds(100));
        Member producer = await JoinAsync();
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("jobs");
        using var takes = new TakesByGetter(Scope.Schema);
        await queue.PutAsync(1);
        await using IAsyncEnumerator<PostgresDelivery<int>> reader = queue.ReadAllAsync().GetAsyncEnumerator();
        (await reader.MoveNextAsync()).Should().BeTrue();
        PostgresDelivery<int> first = reader.Current;

        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {first.Id} FOR UPDATE");
        Task<bool> next = reader.MoveNextAsync().AsTask();
        await WaitsForALockAsync(member, "the reading loop's call waits for item 1's row");

        Task<PostgresDelivery<int>> other = takes.Run(1, () => queue.GetAsync().AsTask());
        await EventuallyAsync(() => Task.FromResult(takes.Of(1) > 0), "the other getter asked the server, and found nothing");
        await producer.Coordinator.CreateQueue<int>("jobs").PutAsync(2);

        try
        {
            await using PostgresDelivery<int> delivery = await other.WaitAsync(Bound);
            delivery.Item.Should().Be(2);
        }
        finally
        {
            await hold.RollbackAsync();
            (await next.WaitAsync(Bound)).Should().BeTrue();
            await reader.Current.DisposeAsync();
        }
    }

    /// <summary>
    /// Two getters sleep, and an item is put without a notification (what a missed one leaves to the polls). The getter
    /// whose turn would come first is cancelled half-way to it: the other's turn still comes a poll interval after the
    /// last call, not a poll interval after the cancellation.
    /// </summary>
    [PostgresFact]
    public async Task AGetterCancelledBeforeItsTurn_DoesNotPutOffTheOthersTurn()
    {
        var time = new CountingTimeProvider();
        (_, PostgresQueue<int> queue, int heartbeat) = await JoinOnTheTestsClockAsync(time, TimeSpan.FromMinutes(1));
        using var cancelFirst = new CancellationTokenSource();
        Task<PostgresDelivery<int>> first = queue.GetAsync(cancelFirst.Token).AsTask();
        await time.WaitForArmedTimersAsync(heartbeat + 1).WaitAsync(Bound);
        Task<PostgresDelivery<int>> second = queue.GetAsync().AsTask();
        await time.WaitForArmedTimersAsync(heartbeat + 2).WaitAsync(Bound);

        await GetsAnUnannouncedItemAtItsTurnAsync(time, second, halfWay: async () =>
        {
            cancelFirst.Cancel();
            await FluentActions.Awaiting(() => first).Should().ThrowAsync<OperationCanceledException>();
        });
    }

    /// <summary>
    /// A getter sleeps, and an item is put without a notification. A reading loop's call half-way to the getter's turn
    /// finds its delivery's lease gone and stops there, having looked for nothing: the getter's turn still comes a poll
    /// interval after its own look.
    /// </summary>
    [PostgresFact]
    public async Task AReadingLoopsCallThatStopsAtALostLease_DoesNotPutOffTheGettersTurn()
    {
        var time = new CountingTimeProvider();
        (_, PostgresQueue<int> queue, _) = await JoinOnTheTestsClockAsync(time, TimeSpan.FromMinutes(1));
        await PutUnannouncedAsync(1);
        await using IAsyncEnumerator<PostgresDelivery<int>> reader = queue.ReadAllAsync().GetAsyncEnumerator();
        (await reader.MoveNextAsync().AsTask().WaitAsync(Bound)).Should().BeTrue();
        long first = reader.Current.Id;
        int armed = time.ArmedTimers;

        Task<PostgresDelivery<int>> other = queue.GetAsync().AsTask();
        await time.WaitForArmedTimersAsync(armed + 1).WaitAsync(Bound); // it asked, found nothing, and sleeps
        await GetsAnUnannouncedItemAtItsTurnAsync(time, other, halfWay: async () =>
        {
            await ScalarAsync<long>($"WITH d AS (DELETE FROM @schema.queue_items WHERE id = {first} RETURNING 1) SELECT count(*) FROM d");
            await FluentActions.Awaiting(() => reader.MoveNextAsync().AsTask().WaitAsync(Bound)).Should().ThrowAsync<PostgresLeaseLostException>();
        });
    }

    /// <summary>
    /// Two getters sleep, and an item is put without a notification. The first takes the turn, and is cancelled while its
    /// call waits for a pooled connection (the pool's other one is busy), before it looked: the turn goes back, and the
    /// second takes it a poll interval after its own look, not a poll interval after the first took it.
    /// </summary>
    [PostgresFact]
    public async Task AGetterCancelledWhileItsTurnsCallWaitsForAConnection_DoesNotPutOffTheOthersTurn()
    {
        var time = new CountingTimeProvider();
        (Member member, PostgresQueue<int> queue, int armed) = await JoinOnTheTestsClockAsync(time, TimeSpan.FromMinutes(1), b =>
        {
            b.MaxPoolSize = 2; // the LISTEN connection, and one for calls
            b.Timeout = 120;
        });
        PostgresQueue<int> otherQueue = member.Coordinator.CreateQueue<int>("other");

        using var cancelFirst = new CancellationTokenSource();
        Task<PostgresDelivery<int>> first = queue.GetAsync(cancelFirst.Token).AsTask();
        await time.WaitForArmedTimersAsync(armed + 1).WaitAsync(Bound);

        // The second's call is held at the server while the clock moves 1 s: it looks, and sleeps, from t0 + 1 s.
        Task<PostgresDelivery<int>> second;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync())
        {
            await ExecuteAsync(hold, "LOCK TABLE @schema.queue_items IN ACCESS EXCLUSIVE MODE");
            second = queue.GetAsync().AsTask();
            await WaitsForALockAsync(member, "the second's call waits");
            time.Advance(TimeSpan.FromSeconds(1));
            await hold.CommitAsync();
        }

        await time.WaitForArmedTimersAsync(armed + 2).WaitAsync(Bound);
        await PutUnannouncedAsync(7);

        // The pool's other connection is busy with a call held at the server.
        await using NpgsqlConnection blocker = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction lockAll = await blocker.BeginTransactionAsync();
        await ExecuteAsync(lockAll, "LOCK TABLE @schema.queue_items IN ACCESS EXCLUSIVE MODE");
        Task<long> count = otherQueue.CountAsync().AsTask();
        await WaitsForALockAsync(member, "a call of the process holds the pool's other connection");

        time.Advance(TimeSpan.FromSeconds(59)); // t0 + 60 s: the first's turn; its call waits for a connection
        cancelFirst.Cancel();
        await FluentActions.Awaiting(() => first.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        await lockAll.CommitAsync();
        await count.WaitAsync(Bound);
        time.Advance(TimeSpan.FromSeconds(1)); // t0 + 61 s: a poll interval after the second's own look

        await using PostgresDelivery<int> delivery = await second.WaitAsync(Bound);
        delivery.Item.Should().Be(7);
    }

    /// <summary>
    /// A getter sleeps; the coordinator's clock steps back an hour (one built on wall-clock time can), and an item is put
    /// without a notification: the getter still polls every poll interval (100 ms here) and takes it.
    /// </summary>
    [PostgresFact]
    public async Task AClockThatStepsBack_DoesNotStopTheGettersPolls()
    {
        var time = new SteppingBackClock { PollInterval = TimeSpan.FromMilliseconds(100) };
        Member member = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.PollInterval = time.PollInterval;
        });
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("jobs");
        Task<PostgresDelivery<int>> getter = queue.GetAsync().AsTask();
        await time.PollTimerArmed.Task.WaitAsync(Bound); // it looked, found nothing, and sleeps a poll interval

        time.StepBack(TimeSpan.FromHours(1));
        await PutUnannouncedAsync(7);

        await using PostgresDelivery<int> delivery = await getter.WaitAsync(Bound);
        delivery.Item.Should().Be(7);
    }

    /// <summary>The system clock, whose readings the test can step back; tells when a timer of the poll interval is armed.</summary>
    private sealed class SteppingBackClock : TimeProvider
    {
        private long _offset;

        public TimeSpan PollInterval { get; init; }

        public TaskCompletionSource PollTimerArmed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void StepBack(TimeSpan by) => Interlocked.Add(ref _offset, -(long)(by.TotalSeconds * System.TimestampFrequency));

        public override long TimestampFrequency => System.TimestampFrequency;

        public override long GetTimestamp() => System.GetTimestamp() + Interlocked.Read(ref _offset);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            if (dueTime == PollInterval)
            {
                PollTimerArmed.TrySetResult();
            }

            return System.CreateTimer(callback, state, dueTime, period);
        }
    }

    /// <summary>Puts 7 in the queue "jobs" without a notification, runs <paramref name="halfWay"/> half-way to the turn
    /// of <paramref name="getter"/> (asleep on a one-minute poll interval of <paramref name="time"/>), and checks that
    /// the getter takes the item at its turn, half a minute later.</summary>
    private async Task GetsAnUnannouncedItemAtItsTurnAsync(CountingTimeProvider time, Task<PostgresDelivery<int>> getter, Func<Task> halfWay)
    {
        await PutUnannouncedAsync(7);
        time.Advance(TimeSpan.FromSeconds(30));
        await halfWay();
        time.Advance(TimeSpan.FromSeconds(30));

        await using PostgresDelivery<int> delivery = await getter.WaitAsync(Bound);
        delivery.Item.Should().Be(7);
    }

    /// <summary>Puts <paramref name="item"/> in the queue "jobs" without a notification: what a missed one leaves to
    /// the polls.</summary>
    private Task PutUnannouncedAsync(int item) => ScalarAsync<long>($"SELECT @schema.queue_put('jobs', ARRAY[0], ARRAY['{item}'::json])");

    /// <summary>A coordinator on <paramref name="time"/> (the heartbeat beats every 200 s) and its queue "jobs", with
    /// its session open; returns how many timers are armed then (the heartbeat's).</summary>
    private async Task<(Member Member, PostgresQueue<int> Queue, int Armed)> JoinOnTheTestsClockAsync(
        CountingTimeProvider time, TimeSpan pollInterval, Action<NpgsqlConnectionStringBuilder>? connection = null)
    {
        Member member = await JoinAsync(
            o =>
            {
                o.TimeProvider = time;
                o.PollInterval = pollInterval;
                o.LeaseDuration = TimeSpan.FromMinutes(10);
            },
            connection: connection);
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("jobs");
        (await queue.TryGetAsync()).Should().BeNull(); // the session is open, and its heartbeat waits
        await time.WaitForArmedTimersAsync(1).WaitAsync(Bound);
        return (member, queue, time.ArmedTimers);
    }

    /// <summary>Counts the calls of queue_take in one schema by the getter that made them, once each is answered: each
    /// getter runs in an activity of its own, the parent of the driver's activity of each command it sends.</summary>
    private sealed class TakesByGetter : IDisposable
    {
        private const string GettersSource = "AsyncPrimitives.Postgres.Tests.Getters";
        private static readonly ActivitySource s_getters = new(GettersSource);
        private readonly ActivityListener _listener;
        private readonly ConcurrentDictionary<int, int> _calls = new();

        public TakesByGetter(string schema)
        {
            string take = $"\"{schema}\".queue_take(";
            _listener = new ActivityListener
            {
                ShouldListenTo = static source => source.Name is GettersSource or "Npgsql",
                Sample = static (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
                ActivityStopped = activity =>
                {
                    if (activity.Parent?.GetTagItem("getter") is int getter &&
                        activity.GetTagItem("db.query.text") is string text && text.Contains(take, StringComparison.Ordinal))
                    {
                        _calls.AddOrUpdate(getter, 1, static (_, calls) => calls + 1);
                    }
                },
            };
            ActivitySource.AddActivityListener(_listener);
        }

        /// <summary>Runs <paramref name="get"/> as getter number <paramref name="getter"/>.</summary>
        public Task<T> Run<T>(int getter, Func<Task<T>> get) => Task.Run(async () =>
        {
            using Activity? activity = s_getters.StartActivity("get");
            activity!.SetTag("getter", getter);
            return await get();
        });

        /// <summary>The calls counted of getter number <paramref name="getter"/>.</summary>
        public int Of(int getter) => _calls.GetValueOrDefault(getter);

        /// <summary>The calls counted of every getter.</summary>
        public int Total => _calls.Values.Sum();

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>
    /// Tasks of one process taking turns with a lock: each release hands the permit to the first wait here, which takes
    /// it without a call, and the wait that becomes first starts polling without a call either (it would find the lock
    /// held): once in line, the waits make no call at all while the lock goes round.
    /// </summary>
    [PostgresFact]
    public async Task HandOversBetweenWaitsOfOneProcess_CostTheWaitsNoCall()
    {
        Member member = await JoinAsync(o =>
        {
            o.PollInterval = TimeSpan.FromHours(1);
            o.LeaseDuration = TimeSpan.FromMinutes(10); // the heartbeat, which also renews the places, beats every 200 s
        });
        PostgresLock theLock = member.Coordinator.CreateLock("turns");
        PostgresLease held = await theLock.AcquireAsync(Bound);
        List<Task<PostgresLease>> waits = await QueueOneAfterAnotherAsync(3, () => theLock.AcquireAsync(), queued: 0);
        await CountCallsInLineAsync();

        await held.ReleaseAsync();
        await ServedInLineAsync(waits, held.FencingToken);

        (await ScalarAsync<long>("SELECT count(*) FROM @schema.calls")).Should().Be(0, "every hand-over happened in the process");
    }

    /// <summary>
    /// The same with a semaphore of <paramref name="maxCount"/>: each release here grants one wait's ticket and hands it
    /// the permit; only that wait is woken, and it takes the permit without a call. (A release used to wake the first
    /// <paramref name="maxCount"/> waits, and all but the granted one asked the server only to find the semaphore full.)
    /// </summary>
    [PostgresTheory, InlineData(2), InlineData(4)]
    public async Task HandOversOfASemaphoreBetweenWaitsOfOneProcess_CostTheWaitsNoCall(int maxCount)
    {
        var time = new CountingTimeProvider(); // neither the heartbeat nor a poll runs unless the clock is moved
        Member member = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.PollInterval = TimeSpan.FromHours(1);
        });
        PostgresSemaphore semaphore = member.Coordinator.CreateSemaphore("turns", maxCount);
        var held = new Queue<PostgresLease>();
        for (int i = 0; i < maxCount; i++)
        {
            held.Enqueue(await semaphore.AcquireAsync(Bound));
        }

        List<Task<PostgresLease>> waits = await QueueOneAfterAnotherAsync(2 * maxCount, () => semaphore.AcquireAsync(), queued: 0);

        // Counted from now on: a wait's call that finds it must go on waiting renews its place (an update of its
        // permit_waiters row); one that claims a permit granted to its ticket updates the permit's row, keeping the ticket.
        await CountCallsInLineAsync();
        await ScalarAsync<int>(
            "CREATE TRIGGER count_claim AFTER UPDATE ON @schema.permit_slots FOR EACH ROW " +
            "WHEN (OLD.ticket IS NOT NULL AND NEW.ticket = OLD.ticket) EXECUTE FUNCTION @schema.count_call(); SELECT 1");

        long lastToken = held.Max(l => l.FencingToken);
        foreach (Task<PostgresLease> wait in waits)
        {
            await held.Dequeue().ReleaseAsync(); // one hand-over at a time
            PostgresLease lease = await wait.WaitAsync(Bound);
            lease.FencingToken.Should().BeGreaterThan(lastToken, "served in line");
            lastToken = lease.FencingToken;
            held.Enqueue(lease);
        }

        while (held.Count > 0)
        {
            await held.Dequeue().ReleaseAsync();
        }

        (await PermitRowsAsync()).Should().Be((0L, 0L));
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.calls")).Should().Be(0, "every hand-over happened in the process");
    }

    /// <summary>A coordinator whose waits poll every 20 ms and whose heartbeat does not run while a test counts calls.</summary>
    private Task<Member> JoinPollingOftenAsync() => JoinAsync(o =>
    {
        o.PollInterval = TimeSpan.FromMilliseconds(20);
        o.LeaseDuration = TimeSpan.FromMinutes(10); // the heartbeat, which also renews the places, beats every 200 s
    });

    /// <summary>Starts <paramref name="count"/> waits one after another, each in line (after <paramref name="queued"/>
    /// others) before the next starts: the line's order is the list's.</summary>
    private async Task<List<Task<PostgresLease>>> QueueOneAfterAnotherAsync(int count, Func<ValueTask<PostgresLease>> acquire, int queued)
    {
        var waits = new List<Task<PostgresLease>>();
        for (int i = 1; i <= count; i++)
        {
            waits.Add(acquire().AsTask());
            await WaitersAsync(queued + i);
        }

        return waits;
    }

    /// <summary>From now on, counts by ticket the calls of the waits in line: each call of a wait in line renews its place.</summary>
    private Task CountCallsInLineAsync() => ScalarAsync<int>(
        "CREATE TABLE @schema.calls (ticket bigint); " +
        "CREATE FUNCTION @schema.count_call() RETURNS trigger LANGUAGE plpgsql AS " +
        "$$ BEGIN INSERT INTO @schema.calls VALUES (NEW.ticket); RETURN NEW; END $$; " +
        "CREATE TRIGGER count_call AFTER UPDATE ON @schema.permit_waiters FOR EACH ROW EXECUTE FUNCTION @schema.count_call(); " +
        "SELECT 1");

    /// <summary>The calls counted of the wait at <paramref name="place"/> in line (0 for the first).</summary>
    private Task<long> CallsOfPlaceAsync(int place) => ScalarAsync<long>(
        "SELECT count(*) FROM @schema.calls " +
        $"WHERE ticket = (SELECT ticket FROM @schema.permit_waiters ORDER BY ticket OFFSET {place} LIMIT 1)");

    /// <summary>Each of <paramref name="waits"/> is served in turn (a higher fencing token than the one before), and
    /// nothing is left on the server.</summary>
    private async Task ServedInLineAsync(IEnumerable<Task<PostgresLease>> waits, long lastToken)
    {
        foreach (Task<PostgresLease> wait in waits)
        {
            await using PostgresLease lease = await wait.WaitAsync(Bound);
            lease.FencingToken.Should().BeGreaterThan(lastToken, "served in line");
            lastToken = lease.FencingToken;
        }

        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }

    /// <summary>
    /// A wait whose first call got its ticket records its place, and is metered as queued (here its metrics listener
    /// holds it there); meanwhile a second wait of the process is in line behind it. A release here grants the first
    /// wait's ticket and hands the permit to its place, then signals the lock's waits, first in line first: the signal
    /// must reach the first wait, not the second (which would find the lock taken and sleep), or the permit would be held
    /// by no one until the first wait's poll (here an hour away).
    /// </summary>
    [PostgresFact]
    public async Task AReleaseGrantingAWaitThatJustTookItsPlace_ReachesThatWait_NotThePollInterval()
    {
        const string Name = "just-queued";
        Member member = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        PostgresLock theLock = member.Coordinator.CreateLock(Name);
        PostgresLease held = await theLock.AcquireAsync(Bound);
        var firstQueued = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var letFirstGoOn = new ManualResetEventSlim();
        int queued = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == PostgresMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            bool ofThisLock = false;
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                ofThisLock |= Equals(tag.Value, Name);
            }

            if (ofThisLock && value == 1 && Interlocked.Increment(ref queued) == 1)
            {
                firstQueued.TrySetResult();
                letFirstGoOn.Wait(Bound); // the first wait, its place recorded, before it goes on to sleep
            }
        });
        listener.Start();

        Task<PostgresLease> first = Task.Run(() => theLock.AcquireAsync().AsTask());
        await firstQueued.Task.WaitAsync(Bound);
        Task<PostgresLease> second = theLock.AcquireAsync().AsTask();
        await WaitersAsync(2);
        long secondTicket = await ScalarAsync<long>("SELECT max(ticket) FROM @schema.permit_waiters");
        await EventuallyAsync(
            () => Task.FromResult(member.Coordinator.Signals.RanksOf("l:" + Name).Contains(secondTicket)), "the second wait has its place");

        await held.ReleaseAsync();
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND ticket IS NOT NULL"))
            .Should().Be(1, "the release granted the permit to the first wait's ticket");
        letFirstGoOn.Set();

        await using (PostgresLease lease = await first.WaitAsync(Bound))
        {
            lease.FencingToken.Should().BeGreaterThan(held.FencingToken);
        }

        await using PostgresLease next = await second.WaitAsync(Bound);
    }

    /// <summary>
    /// A wait here whose place expired on the server (the heartbeat could not renew it in time) is no longer in line
    /// there, so no release grants it; but once a permit is free and no live place can take it, that wait can (its next
    /// call queues again, or takes the permit). A release here that grants no one must wake it; this coordinator
    /// ignores its own notification. Lock: the release frees the lock with the only wait's place expired.
    /// </summary>
    [PostgresFact]
    public async Task AReleaseHereThatGrantsNoOne_ReachesAWaitHereWhosePlaceExpired_NotThePollInterval()
    {
        Member member = await JoinWithoutClockAsync();
        PostgresLock theLock = member.Coordinator.CreateLock("expired-place");
        PostgresLease held = await theLock.AcquireAsync(Bound);
        Task<PostgresLease> wait = theLock.AcquireAsync().AsTask();
        await WaitersAsync(1);
        await ExpireFirstPlaceAsync();

        await held.ReleaseAsync();

        await using PostgresLease lease = await wait.WaitAsync(Bound);
        lease.FencingToken.Should().BeGreaterThan(held.FencingToken);
    }

    /// <summary>The same after a grant behind the expired place: two waits here, the first one's place expired; the
    /// release grants the second; when the second releases, the lock is free and the first is the only wait left.
    /// With a semaphore of two: the second release frees a permit no live place can take.</summary>
    [PostgresTheory, InlineData(1), InlineData(2)]
    public async Task AfterTheGrantBehindAnExpiredPlace_TheWaitWhosePlaceExpired_IsServedWhenAPermitIsFreeAgain(int maxCount)
    {
        Member member = await JoinWithoutClockAsync();
        PostgresSemaphore semaphore = member.Coordinator.CreateSemaphore("handover", maxCount);
        var held = new List<PostgresLease>();
        for (int i = 0; i < maxCount; i++)
        {
            held.Add(await semaphore.AcquireAsync(Bound));
        }

        List<Task<PostgresLease>> waits = await QueueOneAfterAnotherAsync(2, () => semaphore.AcquireAsync(), queued: 0);
        await ExpireFirstPlaceAsync();

        await held[0].ReleaseAsync();
        PostgresLease second = await waits[1].WaitAsync(Bound);
        await (maxCount == 1 ? second : held[1]).ReleaseAsync(); // a permit free, and no live place in line

        await using PostgresLease first = await waits[0].WaitAsync(Bound);
        first.FencingToken.Should().BeGreaterThan(second.FencingToken);
        await second.ReleaseAsync();
    }

    /// <summary>A coordinator whose clock does not move (no heartbeat, no poll) and whose waits would poll once an hour.</summary>
    private Task<Member> JoinWithoutClockAsync() => JoinAsync(o =>
    {
        o.TimeProvider = new CountingTimeProvider();
        o.PollInterval = TimeSpan.FromHours(1);
    });

    /// <summary>The place of the first wait in line expires on the server (as if not renewed in time).</summary>
    private Task ExpireFirstPlaceAsync() => ScalarAsync<int>(
        "UPDATE @schema.permit_waiters SET expires_at = now() - interval '1 second' " +
        "WHERE ticket = (SELECT min(ticket) FROM @schema.permit_waiters); SELECT 1");

    public static TheoryData<string> ReleasesBehindAnExpiredPlace => new() { "release here", "release elsewhere", "cancelled after the grant" };

    /// <summary>
    /// Two local waits on a lock; the first one's place expired on the server (the heartbeat could not renew it in
    /// time). A release (here, or in another process, which notifies) grants the permit to the second one's place, the
    /// first live one in line: the wake-up must reach that wait ("a waiter in the same process gets it at once"; waits
    /// are woken within milliseconds, from any process), not only the lower-ticket one, which queues again at the back.
    /// Handed to the wait's place before its token is cancelled, the grant wins ("a grant that is already on its way
    /// when the token is cancelled wins: the call then returns the lease").
    /// </summary>
    [PostgresTheory, MemberData(nameof(ReleasesBehindAnExpiredPlace))]
    public async Task AReleaseGrantingALocalWaitBehindAnExpiredPlace_ReachesThatWait_NotThePollInterval(string release)
    {
        var time = new CountingTimeProvider(); // no heartbeat unless the test moves the clock
        Member member = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.PollInterval = TimeSpan.FromHours(1); // a wake-up here is never a poll
        });
        Member holder = release == "release elsewhere" ? await JoinAsync() : member;
        PostgresLease held = await holder.Coordinator.CreateLock("handover").AcquireAsync(Bound);
        PostgresLock theLock = member.Coordinator.CreateLock("handover");
        Task<PostgresLease> first = theLock.AcquireAsync().AsTask();
        await WaitersAsync(1);
        using var cancel = new CancellationTokenSource();
        Task<PostgresLease> second = theLock.AcquireAsync(cancel.Token).AsTask();
        await WaitersAsync(2);

        // The first wait's place expires on the server (not renewed in time); the second one's is still live.
        await ExpireFirstPlaceAsync();

        await held.ReleaseAsync();
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND ticket IS NOT NULL"))
            .Should().Be(1, "the release granted the permit to the second wait's place");
        if (release == "cancelled after the grant")
        {
            cancel.Cancel();
        }

        await using PostgresLease lease = await second.WaitAsync(Bound);
        lease.FencingToken.Should().BeGreaterThan(held.FencingToken);
        first.IsCompleted.Should().BeFalse("the first wait queued again at the back");
    }
}
