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

        await using NpgsqlConnection listener = await Server.CreateDataSource().OpenConnectionAsync();
        var payloads = new System.Collections.Concurrent.ConcurrentQueue<string>();
        listener.Notification += (_, e) => payloads.Enqueue(e.Payload);
        await using (var listen = new NpgsqlCommand($"LISTEN \"{Schema}\"", listener))
        {
            await listen.ExecuteNonQueryAsync();
        }

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

    /// <summary>Sends <paramref name="marker"/> on the schema's channel and reads what <paramref name="listener"/> receives
    /// until it arrives: notifications are delivered in the order of their commits.</summary>
    private async Task ReceivedUpToAsync(NpgsqlConnection listener, System.Collections.Concurrent.ConcurrentQueue<string> payloads, string marker)
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

    [PostgresFact]
    public async Task CompletionThatEmptiesTheQueue_NotifiesTheJoinKey_OnlyWhileAJoinWaits()
    {
        Member a = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        Member b = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("numbers");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("numbers");
        await using NpgsqlConnection listener = await Server.CreateDataSource().OpenConnectionAsync();
        var payloads = new System.Collections.Concurrent.ConcurrentQueue<string>();
        listener.Notification += (_, e) => payloads.Enqueue(e.Payload);
        await using (var listen = new NpgsqlCommand($"LISTEN \"{Schema}\"", listener))
        {
            await listen.ExecuteNonQueryAsync();
        }

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
    }

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
        await ScalarAsync<int>(
            "UPDATE @schema.permit_waiters SET expires_at = now() - interval '1 second' " +
            "WHERE ticket = (SELECT min(ticket) FROM @schema.permit_waiters); SELECT 1");

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
