using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A wait whose place in line expired on the server is still a wait in progress: its process does not know (a renewal
/// answers with the leases it renewed, not the places), and it queues again at the back when it next asks. Since
/// revision 8 a renewal held up at the server past the place's expiry no longer revives it (PermitClockTests), so such
/// a wait is left with no place; a release that frees the lock must still wake it, as it wakes such a wait in its own
/// process (permit_release's caller signals its own waits when it granted no one: "a wait here whose place expired on
/// the server (which the server skips) may take what this freed, and only a wake-up brings it to ask").
/// </summary>
public sealed class ExpiredPlaceWakeTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// scale-out.md: "Waits are woken within milliseconds, from any process", "After a release (...) commits, the
    /// coordinator sends a NOTIFY", and PollInterval is "the backstop for a missed notification"; "when the heartbeat
    /// cannot renew them for a whole LeaseDuration (...), those waits lose their places, and queue again at the back".
    /// A process waits for a held lock, alone in line. Its heartbeat's renewal of its place is held up at the server (a
    /// transaction holds the lock's turn) while the place expires there (played by the test, at the server's present
    /// moment); the renewal then runs and, rightly, does not revive it. The holder releases: the lock is free, and the
    /// only process that wants it, which never polls, must be woken and get it. (The release counts only live places
    /// when it decides whether other processes wait, finds none, and sends no notification: the wait sleeps until its
    /// next poll, a PollInterval later, with the lock free.)
    /// </summary>
    [PostgresFact]
    public async Task AWaitWhosePlaceExpiredWhileItsRenewalWasHeldUp_IsWokenByTheReleaseThatFreesTheLock_WithoutPolling()
    {
        var waiterTime = new CountingTimeProvider(); // its heartbeat beats when the test says
        Member holder = await JoinAsync();
        Member waiter = await JoinAsync(o =>
        {
            o.TimeProvider = waiterTime;
            o.LeaseDuration = TimeSpan.FromMinutes(1); // a beat every 20 s
            o.PollInterval = TimeSpan.FromHours(1); // a wake-up that comes within the test came from a notification
        });
        PostgresLease held = await holder.Coordinator.CreateLock("job").AcquireAsync(Bound);
        Task<PostgresLease> waiting = waiter.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1, waiting);

        await RenewalHeldAtTheServerAsync(
            "SELECT @schema.permit_turn('l', 'job')", waiter, waiterTime, "the heartbeat's renewal of the place waits for the lock's turn",
            async () =>
            {
                // Time passes at the server: the place ends now, after the renewal's statement started.
                await ExpirePermitRowsNowAsync("permit_waiters", $"owner = '{waiter.Coordinator.Owner}'");
            });

        // Queued for the turn behind the renewal: the release runs once the renewal has committed.
        await held.ReleaseAsync().AsTask().WaitAsync(Bound);
        await using PostgresLease lease = await waiting.WaitAsync(Bound); // woken, it queues again and takes the free lock
    }
}
