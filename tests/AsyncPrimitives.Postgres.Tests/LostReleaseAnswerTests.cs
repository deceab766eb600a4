using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A release whose answer is lost with its connection is tried again (PermitSet.GiveBackAsync runs permit_release with
/// Database.Retry.Always). The first run may have granted the permit it freed to a wait in another process (a grant not
/// claimed yet, kept for that wait by its heartbeat), and only that run's answer said so (others_wait): the repeat finds
/// the place already served and answers that no other process waits. So the process that released never notifies, and
/// the wait it granted the permit to sleeps until its next poll, with the permit held for it and by no one.
/// </summary>
public sealed class LostReleaseAnswerTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// scale-out.md: "A release hands the permit it frees to the first live waiter in line: a waiter in the same process
    /// gets it at once, one in another process is woken and claims it"; "Waits are woken within milliseconds, from any
    /// process" ("After a release (...) commits, the coordinator sends a NOTIFY"); "A call whose answer is lost with its
    /// connection is not a cancelled wait: it is tried again where that is safe". PermitSet.AcquireCoreAsync's remark on
    /// the grant: "a permit granted by a call whose answer is lost would be held by no one".
    /// Process B waits for lock "job", held by process A (whose connections go through a proxy). A's release waits for
    /// the lock's turn (a transaction of the test holds it), then runs: it grants the lock to B's place, and commits; its
    /// answer is held on the wire, and the connection is then cut. The release is tried again and answers (nothing left
    /// to grant, no one else in line). B, which never polls within the test, must still be woken and get the lock.
    /// </summary>
    [PostgresFact]
    public async Task AReleaseWhoseAnswerIsLost_AfterItGrantedTheLockToAWaitInAnotherProcess_StillWakesThatWait()
    {
        await using TcpProxy proxy = new("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member holder = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(10), port: proxy.Port, connection: c => c.CancellationTimeout = -1);
        Member waiter = await JoinAsync(o =>
        {
            o.TimeProvider = new CountingTimeProvider(); // neither polls nor renews unless the test moves its clock
            o.LeaseDuration = TimeSpan.FromMinutes(10);
            o.PollInterval = TimeSpan.FromHours(1); // a wake-up that comes within the test came from a notification
        });

        PostgresLease held = await holder.Coordinator.CreateLock("job").AcquireAsync(Bound);
        Task<PostgresLease> waiting = waiter.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1, waiting);
        long ticket = await ScalarAsync<long>("SELECT ticket FROM @schema.permit_waiters WHERE name = 'job'");

        Task releasing;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, "SELECT @schema.permit_turn('l', 'job')");
            releasing = held.ReleaseAsync().AsTask();
            await WaitsForALockAsync(holder, "the release waits for the lock's turn");
            int port = await ScalarAsync<int>(
                $"SELECT client_port FROM pg_stat_activity WHERE application_name = '{holder.Application}' AND wait_event_type = 'Lock'");
            proxy.HoldReplies(port); // the release runs; its answer is held on the wire
            await hold.CommitAsync();
        }

        await EventuallyAsync(
            async () => await ScalarAsync<long>(
                $"SELECT count(*) FROM @schema.permit_slots WHERE name = 'job' AND token IS NOT NULL AND ticket = {ticket}") == 1,
            "the release has granted the lock to B's place, and committed");
        proxy.Sever(); // the answer is lost with the connection; the release is tried again
        await releasing.WaitAsync(Bound);

        await using PostgresLease lease = await waiting.WaitAsync(Bound); // woken, it claims the lock granted to it
        lease.FencingToken.Should().BeGreaterThan(held.FencingToken);
    }
}
