using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Wake-ups that come from another process (a NOTIFY) while a wait of this process is still asking the server.
/// </summary>
public sealed class CrossProcessWakeUpTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// WakeSignals: "A wait takes its next signal before it asks the server, so a signal that arrives while it asks is
    /// not missed"; scale-out.md: "A release hands the permit it frees to the first live waiter in line: ... one in
    /// another process is woken and claims it", and PollInterval is "the backstop for a missed notification".
    /// <para>Process B has two waits on a lock held by process A. The first joined the line first (its ticket is the
    /// lower), but its call's answer is still on the wire; the second's call has answered (it knows its ticket). A's
    /// release grants the lock to the first wait's ticket and notifies B. The notification arrives while the first wait is
    /// still asking: it must reach that wait (the one the release granted), not only the second (which finds the lock
    /// held and sleeps), or the lock stays held for no one until the first wait's next poll (here: never, the clock does
    /// not move).</para>
    /// </summary>
    [PostgresFact]
    public async Task ANotifiedGrantToAWaitWhoseCallIsStillAnswering_ReachesThatWait_NotTheWaitBehindIt()
    {
        await using TcpProxy proxy = new("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member a = await JoinAsync();
        Member b = await JoinUnpolledAsync(proxy);
        PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync(Bound);
        PostgresLease heldMarker = await a.Coordinator.CreateLock("marker").AcquireAsync(Bound);
        PostgresLock jobB = b.Coordinator.CreateLock("job");

        // The first wait of B joins the line; its answer is held on the wire.
        (Task<PostgresLease> first, int port, long firstTicket) =
            await StartAWaitWhoseAnswerIsHeldAsync(proxy, b, "l", "job", jobB.AcquireAsync);

        // The second wait of B joins the line behind it, and its call answers.
        Task<PostgresLease> second = jobB.AcquireAsync().AsTask();
        await WaitersAsync(2);
        long secondTicket = await ScalarAsync<long>("SELECT max(ticket) FROM @schema.permit_waiters");
        await EventuallyAsync(
            () => Task.FromResult(b.Coordinator.Signals.RanksOf("l:job").Contains(secondTicket)), "the second wait has its place");

        // A marker: a third wait of B, on another lock A holds, to know when B has heard A's notifications.
        Task<PostgresLease> marker = b.Coordinator.CreateLock("marker").AcquireAsync().AsTask();
        await WaitersAsync(3);

        // A releases the job: the server grants it to the first wait's ticket, and A notifies B.
        await held.ReleaseAsync();
        await a.Coordinator.Notifier.FlushAsync().WaitAsync(Bound);
        (await ScalarAsync<long>($"SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND ticket = {firstTicket}"))
            .Should().Be(1, "the release granted the lock to the first wait's ticket");

        // Then the marker, in a later notification: once the marker's wait has its lock, B has handled the job's.
        await heldMarker.ReleaseAsync();
        await (await marker.WaitAsync(Bound)).ReleaseAsync();

        proxy.ReleaseReplies(port); // the first wait's answer arrives: its ticket, first in line

        await using (PostgresLease lease = await first.WaitAsync(Bound))
        {
            lease.FencingToken.Should().BeGreaterThan(held.FencingToken);
        }

        await using PostgresLease next = await second.WaitAsync(Bound);
    }

    /// <summary>
    /// The semaphore's case of <see cref="ANotifiedGrantToAWaitWhoseCallIsStillAnswering_ReachesThatWait_NotTheWaitBehindIt"/>:
    /// a notification wakes the first maxCount waits of this process in line, and a wait whose ticket is not known yet
    /// sorts last.
    /// <para>Process A holds both permits of a semaphore of maxCount 2. Process B has three waits on it: the first joined
    /// the line first (its ticket is the lowest), but its call's answer is still on the wire; the other two know their
    /// tickets. A releases one permit: the server grants it to the first wait's ticket, and A notifies B. The notification
    /// wakes B's two waits with known tickets (which find nothing); it must also reach the first wait once its ticket is
    /// known, or the permit stays held for no one until that wait's next poll (here: never, the clock does not move).</para>
    /// </summary>
    [PostgresFact]
    public async Task ANotifiedGrantOfASemaphorePermit_ToAWaitWhoseCallIsStillAnswering_ReachesThatWait_NotTheWaitsBehindIt()
    {
        await using TcpProxy proxy = new("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member a = await JoinAsync();
        Member b = await JoinUnpolledAsync(proxy);
        PostgresSemaphore poolA = a.Coordinator.CreateSemaphore("pool", 2);
        PostgresLease heldOne = await poolA.AcquireAsync(Bound);
        PostgresLease heldTwo = await poolA.AcquireAsync(Bound);
        PostgresLease heldMarker = await a.Coordinator.CreateLock("marker").AcquireAsync(Bound);
        PostgresSemaphore poolB = b.Coordinator.CreateSemaphore("pool", 2);

        // The first wait of B joins the line; its answer is held on the wire.
        (Task<PostgresLease> first, int port, long firstTicket) =
            await StartAWaitWhoseAnswerIsHeldAsync(proxy, b, "s", "pool", poolB.AcquireAsync);

        // Two more waits of B join the line behind it, and their calls answer: the first maxCount with known tickets.
        Task<PostgresLease> second = poolB.AcquireAsync().AsTask();
        await WaitersAsync(2);
        Task<PostgresLease> third = poolB.AcquireAsync().AsTask();
        await WaitersAsync(3);
        long[] known = [.. (await ScalarAsync<long[]>(
            $"SELECT array_agg(ticket ORDER BY ticket) FROM @schema.permit_waiters WHERE name = 'pool' AND ticket > {firstTicket}"))];
        known.Should().HaveCount(2);
        await EventuallyAsync(
            () => Task.FromResult(known.All(b.Coordinator.Signals.RanksOf("s:pool").Contains)), "the two waits behind have their places");

        // A marker: a wait of B on a lock A holds, to know when B has heard A's notifications.
        Task<PostgresLease> marker = b.Coordinator.CreateLock("marker").AcquireAsync().AsTask();
        await WaitersAsync(4);

        // A releases one permit: the server grants it to the first wait's ticket, and A notifies B.
        await heldOne.ReleaseAsync();
        await a.Coordinator.Notifier.FlushAsync().WaitAsync(Bound);
        (await ScalarAsync<long>($"SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND ticket = {firstTicket}"))
            .Should().Be(1, "the release granted the permit to the first wait's ticket");

        // Then the marker, in a later notification: once the marker's wait has its lock, B has handled the pool's.
        await heldMarker.ReleaseAsync();
        await (await marker.WaitAsync(Bound)).ReleaseAsync();
        second.IsCompleted.Should().BeFalse("the permit was granted to the first wait");
        third.IsCompleted.Should().BeFalse();

        proxy.ReleaseReplies(port); // the first wait's answer arrives: its ticket, first in line

        PostgresLease granted = await first.WaitAsync(Bound);
        granted.FencingToken.Should().BeGreaterThan(heldTwo.FencingToken);

        // The rest go on in line: the first's permit to the second (released here), A's last one to the third (notified).
        await granted.ReleaseAsync();
        await using PostgresLease next = await second.WaitAsync(Bound);
        await heldTwo.ReleaseAsync();
        await using PostgresLease last = await third.WaitAsync(Bound);
    }

    /// <summary>A coordinator behind <paramref name="proxy"/> that neither polls nor renews unless the test moves its
    /// clock: a wake-up there is a signal.</summary>
    private Task<Member> JoinUnpolledAsync(TcpProxy proxy) => JoinAsync(
        o =>
        {
            o.TimeProvider = new CountingTimeProvider();
            o.LeaseDuration = TimeSpan.FromMinutes(10);
        },
        port: proxy.Port,
        connection: c => c.CancellationTimeout = -1);

    /// <summary>
    /// Starts a wait of <paramref name="member"/> (kind <paramref name="kind"/>, name <paramref name="name"/>) on an
    /// empty line whose call runs on the server (it joins the line, first) while its answer is held on the wire; returns
    /// it, the port its answer is held on, and its ticket.
    /// </summary>
    private async Task<(Task<PostgresLease> Wait, int Port, long Ticket)> StartAWaitWhoseAnswerIsHeldAsync(
        TcpProxy proxy, Member member, string kind, string name, Func<CancellationToken, ValueTask<PostgresLease>> acquire)
    {
        Task<PostgresLease> wait;
        int port;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction holding = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(holding, $"SELECT @schema.permit_turn('{kind}', '{name}')");
            wait = acquire(CancellationToken.None).AsTask();
            await WaitsForALockAsync(member, "the wait's call waits for the set's turn");
            port = await ScalarAsync<int>(
                $"SELECT client_port FROM pg_stat_activity WHERE application_name = '{member.Application}' AND wait_event_type = 'Lock'");
            proxy.HoldReplies(port); // the call runs (it joins the line), its answer is held
            await holding.CommitAsync();
        }

        await WaitersAsync(1, wait);
        return (wait, port, await ScalarAsync<long>($"SELECT min(ticket) FROM @schema.permit_waiters WHERE name = '{name}'"));
    }
}
