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
    private const string AcquireSql =
        "SELECT granted_token, waiting_ticket FROM __schema__.permit_acquire($1::\"char\", $2, $3, $4, $5, $6, $7, $8)";

    private const string ReleaseSql = "SELECT __schema__.permit_release($1::\"char\", $2, $3, $4, $5)";

    private readonly PostgresCoordinator _coordinator;
    private readonly string _kind;

    /// <summary>The owner's type name, the <c>asynctools.kind</c> tag of its waits.</summary>
    private readonly string _typeName;

    public PermitSet(PostgresCoordinator coordinator, char kind, string name, int maxCount)
    {
        _coordinator = coordinator;
        _kind = kind.ToString();
        _typeName = kind == 'l' ? nameof(PostgresLock) : nameof(PostgresSemaphore);
        Name = name;
        MaxCount = maxCount;
        WakeKey = kind + ":" + name;
    }

    public string Name { get; }

    public int MaxCount { get; }

    /// <summary>The key of this set's wake-ups.</summary>
    public string WakeKey { get; }

    /// <summary>Takes a permit, waiting in line (see <see cref="PostgresSemaphore.AcquireAsync(CancellationToken)"/>).</summary>
    public ValueTask<PostgresLease> AcquireAsync(CancellationToken cancellationToken) =>
        AcquireOrThrowAsync(Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Takes a permit, waiting in line at most <paramref name="timeout"/> (checked here: the caller's argument).</summary>
    public ValueTask<PostgresLease> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return AcquireOrThrowAsync(timeout, cancellationToken);
    }

    /// <summary>Takes a permit if one is free now and no one waits; null otherwise.</summary>
    public ValueTask<PostgresLease?> TryAcquireAsync(CancellationToken cancellationToken) =>
        AcquireCoreAsync(TimeSpan.Zero, throwOnTimeout: false, cancellationToken);

    private async ValueTask<PostgresLease> AcquireOrThrowAsync(TimeSpan timeout, CancellationToken cancellationToken) =>
        (await AcquireCoreAsync(timeout, throwOnTimeout: true, cancellationToken).ConfigureAwait(false))!;

    /// <summary>
    /// Takes a permit: now or never (<paramref name="timeout"/> zero with <paramref name="throwOnTimeout"/> false: the
    /// Try form), or waiting in line at most <paramref name="timeout"/>. Returns null only for the Try form.
    /// </summary>
    private async ValueTask<PostgresLease?> AcquireCoreAsync(TimeSpan timeout, bool throwOnTimeout, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var wait = new ServerWait(_coordinator, _typeName, Name, WakeKey, MaxCount, timeout);
        WaitPlace? place = null;
        try
        {
            while (true)
            {
                Session session = await wait.BeginCallAsync(cancellationToken).ConfigureAwait(false);
                (long? Token, long? Ticket) result;
                try
                {
                    // Never cancelled half-way: a permit granted by a call whose answer is lost would be held by no one.
                    // A call with a ticket may run twice (the server answers a repeat with the same grant); the first
                    // one may not: if its answer is lost, the call fails, and the place or permit it may have taken
                    // (never renewed) expires.
                    result = await _coordinator.Database.QueryAsync(
                        AcquireSql,
                        [
                            Database.Parameter(_kind), Database.Parameter(Name), Database.Parameter(MaxCount),
                            Database.Parameter(place?.Ticket), Database.Parameter(wait.Waits),
                            Database.Parameter(_coordinator.Owner), Database.Parameter(session.Key),
                            Database.Parameter(_coordinator.LeaseDuration),
                        ],
                        static r => (r.IsDBNull(0) ? (long?)null : r.GetInt64(0), r.IsDBNull(1) ? (long?)null : r.GetInt64(1)),
                        place is null ? Database.Retry.IfNotRun : Database.Retry.Always,
                        CancellationToken.None).ConfigureAwait(false);
                }
                catch (PostgresCoordinationException e) when (Database.IsSessionEnded(e))
                {
                    if (!wait.RetryAfterSessionEnded(e, inProgress: place is not null))
                    {
                        throw;
                    }

                    continue;
                }

                if (result.Token is long token)
                {
                    if (place is not null)
                    {
                        session.Remove(place);
                        place = null; // the server removed it with the grant
                    }

                    var tracker = new LeaseTracker(session, token, 0, _coordinator.LeaseDuration, wait.SentAt, WakeKey);
                    if (!session.TryAdd(tracker))
                    {
                        // The session ended while the call ran: the permit is free for the others already.
                        throw session.CreateEndException();
                    }

                    return new PostgresLease(this, tracker);
                }

                if (!wait.Waits)
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

                wait.SetRank(place.Ticket);

                await wait.SleepAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (wait.Failed(e, cancellationToken))
        {
            throw; // never reached: the filter records the outcome and lets the exception pass
        }
        catch when (place is not null)
        {
            // Leave the line (a timeout, a cancellation, a failure): nothing of this wait stays on the server. If this
            // cannot reach the server, the place expires by itself: the heartbeat no longer renews it.
            wait.Dispose(); // before the place is left: the wake that leaving sends goes to the waits behind it
            Session session = wait.Session!;
            session.Remove(place);
            if (!session.IsEnded)
            {
                await GiveBackAsync(token: null, place.Ticket).ConfigureAwait(false);
            }

            throw;
        }
    }

    /// <summary>Gives a permit back. Never throws: when the server cannot be reached, the permit (no longer renewed)
    /// is free when its lease expires.</summary>
    public ValueTask ReleaseAsync(long token) => GiveBackAsync(token, ticket: null);

    /// <summary>Permits free now across all processes.</summary>
    public async ValueTask<int> GetFreeCountAsync(CancellationToken cancellationToken) =>
        await _coordinator.Database.QueryAsync(
            "SELECT __schema__.permit_free($1::\"char\", $2, $3)",
            [Database.Parameter(_kind), Database.Parameter(Name), Database.Parameter(MaxCount)],
            static r => r.GetInt32(0),
            Database.Retry.Always,
            cancellationToken).ConfigureAwait(false);

    /// <summary>Gives a permit back, or leaves the wait line, then wakes the waits that may go ahead now. Never throws:
    /// what the server cannot be told about is no longer renewed, and expires.</summary>
    private async ValueTask GiveBackAsync(long? token, long? ticket)
    {
        bool othersWait;
        try
        {
            using var timeout = new CancellationTokenSource(_coordinator.CleanupTimeout);
            othersWait = await _coordinator.Database.QueryAsync(
                ReleaseSql,
                [
                    Database.Parameter(_kind), Database.Parameter(Name), Database.Parameter(token), Database.Parameter(ticket),
                    Database.Parameter(_coordinator.Owner),
                ],
                static r => r.GetBoolean(0),
                Database.Retry.Always,
                timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is PostgresCoordinationException or OperationCanceledException)
        {
            return;
        }

        _coordinator.Signals.Signal(WakeKey);
        if (othersWait)
        {
            _coordinator.Notifier.Request(WakeKey);
        }
    }

    public override string ToString() => Name;
}
