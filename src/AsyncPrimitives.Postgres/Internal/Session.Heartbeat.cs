namespace AsyncPrimitives.Postgres.Internal;

// The heartbeat of a session: it keeps the leases and places in line taken under the session.
internal sealed partial class Session
{
    /// <summary>The give-backs of permits the server renewed after they were lost here (see <see cref="RenewAsync"/>),
    /// one after another; written only by the renewal (one at a time), awaited by <see cref="StopAsync"/>.</summary>
    private volatile Task _givingBack = Task.CompletedTask;

    /// <summary>
    /// Renews, every third of the shortest lease in use (measured again when a shorter one comes into use), the leases
    /// and places this session still holds. A lease the server did not renew is lost (it expired or its session ended);
    /// one the heartbeat cannot renew for a whole lease duration is lost by its own deadline (see
    /// <see cref="LeaseTracker"/>). One renewal at a time: a renewal that does not answer within a beat is left to
    /// finish on its own (its answer still counts when it comes), and the beats skip until it has.
    /// </summary>
    private async Task HeartbeatAsync()
    {
        Task renewal = Task.CompletedTask;
        try
        {
            while (true)
            {
                (TimeSpan interval, Task shortened) = _coordinator.HeartbeatInterval();
                Task beat = Task.Delay(interval, _coordinator.Time, _stop.Token);
                if (await Task.WhenAny(beat, shortened).ConfigureAwait(false) != beat)
                {
                    // A queue with a shorter lease came into use: its deliveries need the next beat sooner.
                    continue;
                }

                await beat.ConfigureAwait(false); // throws once the session has ended
                if (!renewal.IsCompleted)
                {
                    continue;
                }

                LeaseTracker[] leases;
                long[] tickets;
                lock (_sync)
                {
                    leases = [.. _leases];
                    tickets = [.. _places.Select(p => p.Ticket)];
                }

                if (leases.Length == 0 && tickets.Length == 0)
                {
                    continue;
                }

                renewal = RenewAsync(leases, tickets);
                try
                {
                    await renewal.WaitAsync(interval, _coordinator.Time, _stop.Token).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    // Slow: it goes on in the background.
                }
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            // The session ended.
        }
        catch (Exception e)
        {
            // The clock failed (a TimeProvider is user code: it could not create the beat's timer), or a data source was
            // disposed before its coordinator. Without a heartbeat nothing is renewed, so the session ends with that
            // failure, as it does when its LISTEN connection fails: leases are lost, what the session holds on the
            // server is freed, waits in progress fail, and the next call opens a new session.
            await EndThenFreeAsync(new PostgresCoordinationException(
                "The coordinator's heartbeat failed (see the inner exception): waits in progress fail, leases held are " +
                "lost, and the coordinator reconnects on the next call.", e), s_closeTimeout).ConfigureAwait(false);
        }
    }

    /// <summary>One renewal: what the server renewed gets a new deadline (a permit lost here meanwhile is given back, see
    /// <see cref="_givingBack"/>), what it did not is lost. Never throws.</summary>
    private async Task RenewAsync(LeaseTracker[] leases, long[] tickets)
    {
        long sentAt = _coordinator.Time.GetTimestamp(); // moved to when the statement is sent (not a wait for a connection)
        LeaseTracker[] permits = [.. leases.Where(l => !l.IsDelivery)];
        List<long> rows;
        try
        {
            rows = await _coordinator.Database.QueryAllAsync(
                "SELECT __schema__.renew($1, $2, $3::\"char\"[], $4, $5, $6, $7, $8, $9)",
                [
                    Database.Parameter(_coordinator.Owner), Database.Parameter(Key),
                    Database.Parameter(permits.Select(l => l.PermitKind).ToArray()),
                    Database.Parameter(permits.Select(l => l.PermitName).ToArray()),
                    Database.Parameter(permits.Select(l => l.Id).ToArray()),
                    Database.Parameter(tickets), Database.Parameter(_coordinator.LeaseDuration),
                    Database.Parameter(leases.Where(l => l.IsDelivery).Select(l => l.ItemId).ToArray()),
                    Database.Parameter(leases.Where(l => l.IsDelivery).Select(l => l.Id).ToArray()),
                ],
                static r => r.GetInt64(0),
                Database.Retry.Always,
                CancellationToken.None,
                sending: () => sentAt = _coordinator.Time.GetTimestamp()).ConfigureAwait(false);
        }
        catch (PostgresCoordinationException e) when (Database.IsSessionEnded(e))
        {
            End(e);
            return;
        }
        catch (PostgresCoordinationException)
        {
            // Not renewed this time: the next beat tries again. Leases whose deadline passes meanwhile are lost by
            // their own timers.
            return;
        }

        var renewed = new HashSet<long>(rows);
        List<LeaseTracker>? lostMeanwhile = null;
        foreach (LeaseTracker lease in leases)
        {
            if (renewed.Contains(lease.Id))
            {
                lease.Renewed(sentAt);
                if (lease.IsLost)
                {
                    // Lost here while this renewal was held up (or by the time it answered): the server has just renewed
                    // it for no one.
                    (lostMeanwhile ??= []).Add(lease);
                }
            }
            else if (lease.IsHeld && !lease.IsEnding)
            {
                lease.MarkLost();
            }
        }

        if (lostMeanwhile is not null && !IsEnded)
        {
            // Given back apart from the renewal, which the next beats wait for: a give-back held up at the server (up to
            // the cleanup timeout, a lease duration) must not hold up the renewals of the leases still held. One after
            // another (renewals run one at a time); awaited when the session stops. (A session that ended frees them
            // on the server with the rest.)
            Task before = _givingBack;
            _givingBack = GiveBackAsync(before, lostMeanwhile);
        }
    }

    /// <summary>Gives back, after <paramref name="before"/>, the leases the server renewed after they were lost here.</summary>
    private static async Task GiveBackAsync(Task before, List<LeaseTracker> leases)
    {
        await before.ConfigureAwait(false);
        foreach (LeaseTracker lease in leases)
        {
            await lease.GiveBackAfterLossAsync().ConfigureAwait(false);
        }
    }
}

/// <summary>A wait's place in a wait line (its ticket), kept by the heartbeat while the wait lasts; and the permit a
/// release in this process granted to it, until the wait takes it.</summary>
internal sealed class WaitPlace(long ticket, string wakeKey, Action wake)
{
    private PermitGrant? _grant;

    public long Ticket { get; } = ticket;

    /// <summary>The wake key of its set: when the session ends with the place in line, a release may have granted it a
    /// permit this process never heard of, which the server then frees for the next waiter.</summary>
    public string WakeKey { get; } = wakeKey;

    /// <summary>Hands over the permit granted to this place by a release, and wakes its wait (only it: the permit is
    /// its, and the other waits would find nothing new).</summary>
    public void Grant(PermitGrant grant)
    {
        Volatile.Write(ref _grant, grant);
        wake();
    }

    /// <summary>The permit granted to this place, once; null when none was.</summary>
    public PermitGrant? TakeGrant() => Interlocked.Exchange(ref _grant, null);

    /// <summary>Whether a permit was granted to this place and not taken yet.</summary>
    public bool HasGrant => Volatile.Read(ref _grant) is not null;
}

/// <summary>A permit granted to a wait by a release: its token, and when the release was sent (its lease counts from then).</summary>
internal sealed record PermitGrant(long Token, long SentAt);
