using Npgsql;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// The machinery under <see cref="PostgresLock"/> (a set of one permit) and <see cref="PostgresSemaphore"/>: acquire
/// with a FIFO wait, release, count. Each step is one call of a server-side function, so it is one round trip.
/// </summary>
/// <remarks>
/// <para>A permit is granted only by the waiter's own call (the server never hands a permit to a waiter that is not
/// asking), so a wait that is cancelled or times out between calls holds nothing: it only leaves its place in line. The
/// call that may grant a permit is never cancelled half-way (its outcome must be known); cancellation is observed
/// before it and between calls.</para>
/// <para>Between calls a wait sleeps until its key is signalled (a release in this process, or a notification from
/// another), the poll interval passes, its timeout passes, its token is cancelled, or the session ends.</para>
/// </remarks>
internal sealed class PermitSet
{
    private readonly PostgresCoordinator _coordinator;
    private readonly string _kind;

    public PermitSet(PostgresCoordinator coordinator, char kind, string name, int maxCount)
    {
        _coordinator = coordinator;
        _kind = kind.ToString();
        Name = name;
        MaxCount = maxCount;
        WakeKey = kind + ":" + name;
    }

    public string Name { get; }

    public int MaxCount { get; }

    /// <summary>The key of this set's wake-ups.</summary>
    public string WakeKey { get; }

    /// <summary>
    /// Takes a permit: now or never (<paramref name="timeout"/> zero with <paramref name="throwOnTimeout"/> false: the
    /// Try form), or waiting in line at most <paramref name="timeout"/>. Returns null only for the Try form.
    /// </summary>
    public async ValueTask<PostgresLease?> AcquireAsync(TimeSpan timeout, bool throwOnTimeout, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        TimeProvider time = _coordinator.Time;
        long started = time.GetTimestamp();
        bool wait = timeout != TimeSpan.Zero;
        Database database = _coordinator.Database;
        WakeSignals.Entry? signal = wait ? _coordinator.Signals.Enter(WakeKey) : null;
        Session? session = null;
        WaitPlace? place = null;
        bool retriedSession = false;
        try
        {
            while (true)
            {
                session ??= await _coordinator.GetSessionAsync(cancellationToken).ConfigureAwait(false);
                Task woken = signal?.Next ?? Task.CompletedTask;
                long sentAt = time.GetTimestamp();
                (long? Token, long? Ticket) result;
                try
                {
                    // Never cancelled half-way: a permit granted by a call whose answer is lost would be held by no one.
                    // A call with a ticket may run twice (the server answers a repeat with the same grant); the first
                    // one may not: if its answer is lost, the call fails, and the place or permit it may have taken
                    // (never renewed) expires.
                    result = await database.QueryAsync(
                        database.PermitAcquire,
                        [
                            Database.Parameter(_kind), Database.Parameter(Name), Database.Parameter(MaxCount),
                            Database.Parameter(place?.Ticket), Database.Parameter(wait),
                            Database.Parameter(_coordinator.Owner), Database.Parameter(session.Pid),
                            Database.Parameter(session.BackendStart), Database.Parameter(_coordinator.LeaseDuration),
                        ],
                        static r => (r.IsDBNull(0) ? (long?)null : r.GetInt64(0), r.IsDBNull(1) ? (long?)null : r.GetInt64(1)),
                        place is null ? Database.Retry.IfNotRun : Database.Retry.Always,
                        CancellationToken.None).ConfigureAwait(false);
                }
                catch (PostgresCoordinationException e) when (Database.IsSessionEnded(e))
                {
                    session.End(e);
                    if (place is not null || retriedSession)
                    {
                        throw; // a wait in progress fails with its session
                    }

                    // The session ended before this call noticed: a new call, so a new session.
                    retriedSession = true;
                    session = null;
                    continue;
                }

                if (result.Token is long token)
                {
                    if (place is not null)
                    {
                        session.Remove(place);
                        place = null; // the server removed it with the grant
                    }

                    var tracker = new LeaseTracker(session, LeaseKind.Permit, token, 0, _coordinator.LeaseDuration, sentAt, WakeKey, time);
                    if (!session.TryAdd(tracker))
                    {
                        // The session ended while the call ran: the permit is free for the others already.
                        throw session.CreateEndException();
                    }

                    return new PostgresLease(this, tracker);
                }

                if (!wait)
                {
                    return throwOnTimeout ? throw new TimeoutException("The wait timed out.") : null;
                }

                if (place is null)
                {
                    place = new WaitPlace(result.Ticket!.Value);
                    if (!session.TryAdd(place))
                    {
                        throw session.CreateEndException();
                    }
                }
                else if (place.Ticket != result.Ticket)
                {
                    // The place was given up (not renewed in time); the call queued again at the back.
                    session.Remove(place);
                    place = new WaitPlace(result.Ticket!.Value);
                    session.TryAdd(place);
                }

                TimeSpan sleep = _coordinator.PollInterval;
                if (timeout != Timeout.InfiniteTimeSpan)
                {
                    TimeSpan left = timeout - time.GetElapsedTime(started);
                    if (left <= TimeSpan.Zero)
                    {
                        throw new TimeoutException("The wait timed out.");
                    }

                    sleep = left < sleep ? left : sleep;
                }

                await Waiting.WaitForTurnAsync(woken, sleep, session, time, cancellationToken).ConfigureAwait(false);
            }
        }
        catch when (place is not null)
        {
            // Leave the line (a timeout, a cancellation, a failure): nothing of this wait stays on the server. If this
            // cannot reach the server, the place expires by itself: the heartbeat no longer renews it.
            session!.Remove(place);
            if (!session.IsEnded)
            {
                await LeaveAsync(place.Ticket).ConfigureAwait(false);
            }

            throw;
        }
        finally
        {
            if (signal is not null)
            {
                _coordinator.Signals.Leave(signal);
            }
        }
    }

    /// <summary>Gives a permit back. Never throws: when the server cannot be reached, the permit (no longer renewed)
    /// is free when its lease expires.</summary>
    public async ValueTask ReleaseAsync(long token)
    {
        Database database = _coordinator.Database;
        bool othersWait;
        try
        {
            using var timeout = new CancellationTokenSource(_coordinator.CleanupTimeout);
            othersWait = await database.QueryAsync(
                database.PermitRelease,
                [Database.Parameter(_kind), Database.Parameter(Name), Database.Parameter(token), Database.Parameter(_coordinator.Owner)],
                static r => r.GetBoolean(0),
                Database.Retry.Always,
                timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is PostgresCoordinationException or OperationCanceledException)
        {
            // Not renewed any more, the permit is free at the latest when its lease expires.
            return;
        }

        _coordinator.Signals.Signal(WakeKey);
        if (othersWait)
        {
            _coordinator.Notifier.Request(WakeKey);
        }
    }

    /// <summary>Permits free now across all processes.</summary>
    public async ValueTask<int> GetFreeCountAsync(CancellationToken cancellationToken)
    {
        Database database = _coordinator.Database;
        return await database.QueryAsync(
            database.PermitFree,
            [Database.Parameter(_kind), Database.Parameter(Name), Database.Parameter(MaxCount)],
            static r => r.GetInt32(0),
            Database.Retry.Always,
            cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask LeaveAsync(long ticket)
    {
        Database database = _coordinator.Database;
        try
        {
            using var timeout = new CancellationTokenSource(_coordinator.CleanupTimeout);
            bool othersWait = await database.QueryAsync(
                database.PermitLeave,
                [Database.Parameter(_kind), Database.Parameter(Name), Database.Parameter(ticket), Database.Parameter(_coordinator.Owner)],
                static r => r.GetBoolean(0),
                Database.Retry.Always,
                timeout.Token).ConfigureAwait(false);
            _coordinator.Signals.Signal(WakeKey);
            if (othersWait)
            {
                _coordinator.Notifier.Request(WakeKey);
            }
        }
        catch (Exception e) when (e is PostgresCoordinationException or OperationCanceledException)
        {
            // The place expires by itself (see the caller).
        }
    }

    public override string ToString() => Name;
}
