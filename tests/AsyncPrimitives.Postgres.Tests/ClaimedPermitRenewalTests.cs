using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A permit that a release granted to a waiter's place in line (its ticket), and that the waiter then claimed, is a lease
/// like any other: once its process counts it as lost, the server must not keep it for a whole new lease for no one.
/// The heartbeat renews a place's granted permit by the place's ticket (renew: "A permit granted to a waiter that has
/// not claimed it yet is kept for it"), and a claimed permit keeps its ticket: a renewal sent while the process was
/// still waiting, and held up at the server until after the claim and the lease's loss, renews it by that ticket, and
/// nothing gives it back.
/// </summary>
public sealed class ClaimedPermitRenewalTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// scale-out.md (Failures): "PostgresLease.ReleaseAsync (and disposing a lease) never throws: a lease that was lost
    /// is already free"; renew (Schema.sql): "extends the leases the coordinator still knows it holds"; LeaseTracker:
    /// a lease "lost here (...) that the renewal then renewed (...): A permit is given back at once". (The token path
    /// of this is UnheldPermitTests.ALeaseLost_WhileItsRenewalWasHeldUpAtTheServer_IsFreeForOthers_OnceTheRenewalHasRun.)
    /// A process holds lock "a" and waits for lock "job". Its heartbeat's renewal (lock "a", and its place in "job"'s
    /// line) is held up at the server on "a"'s turn (a transaction of the test holds it). Meanwhile "job"'s holder
    /// releases: the lock is granted to the place, and the waiter is woken and claims it (its call does not need "a").
    /// Its lease of "job" is then lost here (its local deadline passes: the renewal is still held up, and a heartbeat
    /// sends one renewal at a time). Once the renewal has run, the server must not hold "job" for a new lease: the
    /// process counts it as lost, and its holder's release is a no-op. Either the renewal left it alone (it expires when
    /// its claim said) or the process gave it back, as it does a lease renewed by its token after its loss. (The
    /// renewal renews the claimed permit by its place's ticket, for a whole new lease from when it ran, and answers only
    /// with the tokens it was sent: the process never learns of it and does not give it back, so "job" is held by no
    /// one for up to a whole lease longer.)
    /// </summary>
    [PostgresFact]
    public async Task AClaimedPermit_LostWhileARenewalOfItsPlaceWasHeldUpAtTheServer_IsNotKeptForANewLeaseForNoOne()
    {
        var time = new CountingTimeProvider(); // the waiter's heartbeat beats when the test says
        Member holder = await JoinAsync();
        Member waiter = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.LeaseDuration = TimeSpan.FromMinutes(1); // a beat every 20 s; the local deadline 59 s after a renewal was sent
            o.PollInterval = TimeSpan.FromHours(1); // its wait is woken by the release's notification, never by a poll
        });
        Member other = await JoinAsync();

        PostgresLease held = await holder.Coordinator.CreateLock("job").AcquireAsync(Bound);
        PostgresLease a = await waiter.Coordinator.CreateLock("a").AcquireAsync(Bound);
        Task<PostgresLease> waiting = waiter.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1, waiting);

        PostgresLease job;
        string claimedUntil;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, "SELECT @schema.permit_turn('l', 'a')");
            await BeatUntilTheRenewalWaitsAsync(waiter, time, "the heartbeat's renewal (lock a, and the place in job's line) waits for a's turn");

            // The holder releases: the lock is granted to the waiter's place; the waiter is woken and claims it.
            await held.ReleaseAsync().AsTask().WaitAsync(Bound);
            job = await waiting.WaitAsync(Bound);
            claimedUntil = await ScalarAsync<string>($"SELECT expires_at::text FROM @schema.permit_slots WHERE token = {job.FencingToken}");

            // No renewal gets through (the one in flight is held up): the lease of "job" is lost here.
            await AdvanceUntilLostAsync(time, job.Lost);
            await hold.CommitAsync();
        }

        // The renewal runs now. It renewed lock "a", lost here meanwhile too, which the heartbeat then gives back.
        await EventuallyAsync(
            async () => await ScalarAsync<long>(
                "SELECT count(*) FROM @schema.permit_slots WHERE kind = 'l' AND name = 'a' AND token IS NOT NULL") == 0,
            "the renewal has run (the lease of a it renewed after its loss was given back)");
        await job.ReleaseAsync(); // a no-op: the lease was lost
        await a.ReleaseAsync();

        // Given back (free), or left to the expiry its claim set; not renewed for a whole new lease for no one.
        (await ScalarAsync<long>(
                $"SELECT count(*) FROM @schema.permit_slots WHERE token = {job.FencingToken} AND expires_at > '{claimedUntil}'::timestamptz"))
            .Should().Be(0, "the process counts the lease of job as lost: the renewal must not have kept it for a new lease without giving it back");
    }
}
