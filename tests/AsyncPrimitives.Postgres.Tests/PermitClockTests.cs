using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Locks and semaphores under the server's two clocks: a statement's start (now()) and the present moment
/// (clock_timestamp()). A statement that waited at the server (for a permit set's turn) must judge every expiry it acts
/// on by the clock the others see, as the queue's statements do (QueueClockTests): an expired permit is free for the
/// others from its expiry on, and a renewal that reaches it later must not make it held again.
/// </summary>
public sealed class PermitClockTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// PostgresSemaphore.GetCurrentCountAsync: "The permits free now across all processes: MaxCount less the leases held
    /// (a snapshot)"; scale-out.md: a row "counts only while the key is still locked (...) and its expiry has not
    /// passed"; renew (Schema.sql): "Expired rows are never revived: someone else may already count on their permit".
    /// The heartbeat's renewal of a held permit is held up at the server (a transaction holds the set's turn); meanwhile
    /// the lease expires there (played by the test: it ends at the server's present moment, after the renewal's
    /// statement started), and another process sees the permit free. Once the renewal runs it must find the lease
    /// expired: the holder's lease is lost, and the other process can take the permit it was told is free. (It renews
    /// it, judging the expiry by its statement's start: the holder keeps a lease the others counted as free, and the
    /// other process's TryAcquireAsync, right after, gets nothing though no one acquired meanwhile.)
    /// </summary>
    [PostgresFact]
    public async Task ARenewal_HeldUpAtTheServerPastTheLeasesExpiry_DoesNotReviveAPermitTheOthersSawFree()
    {
        var holderTime = new CountingTimeProvider(); // the heartbeat beats when the test says; no local deadline passes
        Member holder = await JoinAsync(o =>
        {
            o.TimeProvider = holderTime;
            o.LeaseDuration = TimeSpan.FromMinutes(1); // a beat every 20 s; the local deadline 59 s after a renewal was sent
        });
        Member other = await JoinAsync();
        PostgresLease lease = await holder.Coordinator.CreateSemaphore("job", 1).AcquireAsync(Bound);
        PostgresSemaphore semaphore = other.Coordinator.CreateSemaphore("job", 1);
        (await semaphore.GetCurrentCountAsync()).Should().Be(0, "the holder has the only permit");

        await RenewalHeldAtTheServerAsync(
            "SELECT @schema.permit_turn('s', 'job')", holder, holderTime, "the heartbeat's renewal waits for the semaphore's turn",
            async () =>
            {
                // Time passes at the server: the lease ends now, after the renewal's statement started.
                await ExpirePermitRowsNowAsync("permit_slots", $"token = {lease.FencingToken}");
                (await semaphore.GetCurrentCountAsync()).Should().Be(1, "the holder's lease has expired: its permit is free for the others");
            });

        // Queued for the turn behind the renewal, which has it now: this runs once the renewal has committed.
        PostgresLease? taken = await semaphore.TryAcquireAsync().AsTask().WaitAsync(Bound);
        try
        {
            taken.Should().NotBeNull("the permit expired before the renewal reached it, and no one else acquired it since the others saw it free");
            await WaitForLostAsync(lease.Lost); // the renewal found the lease expired
        }
        finally
        {
            if (taken is not null)
            {
                await taken.ReleaseAsync();
            }

            await lease.ReleaseAsync();
        }
    }

    /// <summary>
    /// scale-out.md: "A release hands the permit it frees to the first live waiter in line"; "when the heartbeat cannot
    /// renew them for a whole LeaseDuration (...), those waits lose their places, and queue again at the back". A lock is
    /// held, and two processes wait for it: the first in line is cut off (its heartbeat stopped), the second is not. The
    /// holder's release is held up at the server (a transaction holds the lock's turn); meanwhile the first waiter's place
    /// expires there (played by the test: it ends at the server's present moment, after the release's statement
    /// started). The release must grant the lock to the second waiter, the first live one, not to the expired place
    /// (it does, judging the place's expiry by its statement's start: the lock then goes to a process that lost its
    /// place, and, were that process really cut off, would be held by no one for a whole lease while the live waiter
    /// waits).
    /// </summary>
    [PostgresFact]
    public async Task ARelease_HeldUpAtTheServerPastAPlacesExpiry_GrantsTheLockToTheFirstLiveWaiter()
    {
        var frozen = new CountingTimeProvider(); // no heartbeat, no poll: the server alone decides, and wake-ups
        Member holder = await JoinAsync(o => o.TimeProvider = frozen);
        Member cutOff = await JoinAsync(o => o.TimeProvider = new CountingTimeProvider());
        Member live = await JoinAsync(o => o.TimeProvider = new CountingTimeProvider());
        PostgresLease held = await holder.Coordinator.CreateLock("job").AcquireAsync(Bound);
        Task<PostgresLease> first = cutOff.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1, first);
        Task<PostgresLease> second = live.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(2, second);
        long expiring = await ScalarAsync<long>($"SELECT ticket FROM @schema.permit_waiters WHERE owner = '{cutOff.Coordinator.Owner}'");

        Task release = await CallHeldAtTheServerAsync(
            "SELECT @schema.permit_turn('l', 'job')",
            holder,
            () => held.ReleaseAsync().AsTask(),
            async _ =>
            {
                // Time passes at the server: the first waiter's place ends now, after the release's statement started.
                await ExpirePermitRowsNowAsync("permit_waiters", $"ticket = {expiring}");
            });
        await release.WaitAsync(Bound);

        (await ScalarAsync<Guid>("SELECT owner FROM @schema.permit_slots WHERE token IS NOT NULL"))
            .Should().Be(live.Coordinator.Owner, "the first waiter's place had expired when the release reached the line: the lock goes to the first live waiter");
        await using PostgresLease lease = await second.WaitAsync(Bound);
        first.IsCompleted.Should().BeFalse("the waiter that lost its place queues again behind");
    }

    /// <summary>
    /// scale-out.md: "when the heartbeat cannot renew them for a whole LeaseDuration (...), those waits lose their places,
    /// and queue again at the back"; "A release hands the permit it frees to the first live waiter in line"; renew
    /// (Schema.sql): "Expired rows are never revived". Two processes wait for a held lock. The first one's heartbeat
    /// renewal of its place is held up at the server (a transaction holds the lock's turn); meanwhile the place expires
    /// there (played by the test: it ends at the server's present moment, after the renewal's statement started). Once
    /// the renewal has run, the holder releases: the lock must go to the second waiter, the first live one. (The renewal
    /// renews the expired place, judging its expiry by its statement's start, and the release grants the lock to it.)
    /// </summary>
    [PostgresFact]
    public async Task ARenewal_HeldUpAtTheServerPastAPlacesExpiry_DoesNotReviveThePlace()
    {
        var waiterTime = new CountingTimeProvider(); // its heartbeat beats when the test says
        Member holder = await JoinAsync(o => o.TimeProvider = new CountingTimeProvider());
        Member renewing = await JoinAsync(o =>
        {
            o.TimeProvider = waiterTime;
            o.LeaseDuration = TimeSpan.FromMinutes(1); // a beat every 20 s
            o.PollInterval = TimeSpan.FromHours(1); // its wait does not poll meanwhile
        });
        Member live = await JoinAsync(o => o.TimeProvider = new CountingTimeProvider());
        PostgresLease held = await holder.Coordinator.CreateLock("job").AcquireAsync(Bound);
        Task<PostgresLease> first = renewing.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1, first);
        Task<PostgresLease> second = live.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(2, second);
        long expiring = await ScalarAsync<long>($"SELECT ticket FROM @schema.permit_waiters WHERE owner = '{renewing.Coordinator.Owner}'");

        await RenewalHeldAtTheServerAsync(
            "SELECT @schema.permit_turn('l', 'job')", renewing, waiterTime, "the heartbeat's renewal of the place waits for the lock's turn",
            async () =>
            {
                // Time passes at the server: the place ends now, after the renewal's statement started.
                await ExpirePermitRowsNowAsync("permit_waiters", $"ticket = {expiring}");
            });

        // Queued for the turn behind the renewal: the release runs once the renewal has committed.
        await held.ReleaseAsync().AsTask().WaitAsync(Bound);

        (await ScalarAsync<Guid>("SELECT owner FROM @schema.permit_slots WHERE token IS NOT NULL"))
            .Should().Be(live.Coordinator.Owner, "the first waiter's place expired before its renewal reached it: the lock goes to the first live waiter");
        await using PostgresLease lease = await second.WaitAsync(Bound);
        first.IsCompleted.Should().BeFalse("the waiter that lost its place queues again behind");
    }
}
