using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
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
/// another), the poll interval passes (only for the first waits of this process in line: see <see cref="WakeSignals"/>),
/// its timeout passes, its token is cancelled, or the session ends.</para>
/// </remarks>
internal sealed class PermitSet
{
    private const string AcquireSql =
        "SELECT granted_token, waiting_ticket FROM __schema__.permit_acquire($1::\"char\", $2, $3, $4, $5, $6, $7, $8)";

    private const string ReleaseSql =
        "SELECT others_wait, granted_tickets, granted_tokens FROM __schema__.permit_release($1::\"char\", $2, $3, $4, $5, $6)";

    private readonly PostgresCoordinator _coordinator;
    private readonly string _kind;

    /// <summary><see cref="ReleaseAsync"/>, made once: how a lease of this set renewed after its loss is given back.</summary>
    private readonly Func<long, ValueTask> _giveBack;

    /// <summary>The owner's type name, the <c>asynctools.kind</c> tag of its waits.</summary>
    private readonly string _typeName;

    /// <summary>The places in line of this process's waits, by ticket: a release here that grants one of them its permit
    /// hands the token over through it, so the wait needs no call to claim it. The coordinator's, shared by every set of
    /// it: a release by one object of a name reaches a wait on another object of that name.</summary>
    private readonly ConcurrentDictionary<long, WaitPlace> _places;

    /// <summary>Permits granted by a release here to a ticket whose wait had not recorded its place yet (its call that
    /// got the ticket was still returning): the wait takes it from here. An entry whose wait never comes (its call
    /// failed after the server had queued it, or it left its place in the same instant) is dropped once older than a
    /// lease (<see cref="DropStaleGrants"/>); on the server its permit was given back with the place, or expires. The
    /// coordinator's, as <see cref="_places"/>.</summary>
    private readonly ConcurrentDictionary<long, PermitGrant> _grants;

    public PermitSet(PostgresCoordinator coordinator, char kind, string name, int maxCount)
    {
        _coordinator = coordinator;
        _places = coordinator.PermitPlaces;
        _grants = coordinator.PermitGrants;
        _kind = kind.ToString();
        _typeName = kind == 'l' ? nameof(PostgresLock) : nameof(PostgresSemaphore);
        Name = name;
        MaxCount = maxCount;
        WakeKey = kind + ":" + name;
        _giveBack = ReleaseAsync;
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
        using var wait = new ServerWait(_coordinator, _typeName, Name, WakeKey, MaxCount, WakeSignals.Polling.FirstInLine, timeout);
        WaitPlace? place = null;

        // Whether the session recorded the place: one it did not (it ended here while the call that queued the place
        // ran) may have been queued on the server after the session's places were removed there.
        bool placeRecorded = false;
        try
        {
            while (true)
            {
                Session session = await wait.BeginCallAsync(cancellationToken).ConfigureAwait(false);
                if (place?.TakeGrant() is { } grant)
                {
                    // A release in this process granted the permit to this wait's place: no call needed.
                    return Granted(session, ref place, grant.Token, grant.SentAt, out Exception? clockFailure)
                        ?? await GiveBackUnheldAsync(session, grant.Token, clockFailure).ConfigureAwait(false);
                }

                (long? Token, long? Ticket) result;
                try
                {
                    // Cancelled only until it is sent, never half-way: a permit granted by a call whose answer is lost
                    // would be held by no one. A call with a ticket may run twice (the server answers a repeat with the
                    // same grant); the first one may not: if its answer is lost, the call fails, and the place or permit
                    // it may have taken (never renewed) expires.
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
                        cancellationToken,
                        Database.Cancel.BeforeSending,
                        wait.Sending).ConfigureAwait(false);
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
                    return Granted(session, ref place, token, wait.SentAt, out Exception? clockFailure)
                        ?? await GiveBackUnheldAsync(session, token, clockFailure).ConfigureAwait(false);
                }

                if (!wait.Waits)
                {
                    return throwOnTimeout ? throw ServerWait.TimedOut() : null;
                }

                if (place is null)
                {
                    // Its rank (its ticket) decides which of this process's waits a signal wakes first, and which poll.
                    place = new WaitPlace(result.Ticket!.Value, WakeKey, wait.Wake);
                    wait.SetRank(place.Ticket);
                    _places[place.Ticket] = place;
                    placeRecorded = session.TryAdd(place);
                    if (!placeRecorded)
                    {
                        throw session.CreateEndException();
                    }

                    // Metered once the place is recorded: a listener that throws fails the wait, which leaves the line.
                    wait.Queued();
                }
                else if (place.Ticket != result.Ticket)
                {
                    // The place was given up (not renewed in time); the call queued again at the back.
                    Leave(session, place);
                    place = new WaitPlace(result.Ticket!.Value, WakeKey, wait.Wake);
                    wait.SetRank(place.Ticket);
                    _places[place.Ticket] = place;
                    placeRecorded = session.TryAdd(place);

                    // The wake that brought this wait here was meant for the first place in line, which this one no
                    // longer is: passed on to the waits now ahead of it (a release may have granted one of them).
                    _coordinator.Signals.Signal(WakeKey);
                }

                if (_grants.TryRemove(place.Ticket, out PermitGrant? early))
                {
                    // Granted by a release here before the place was recorded: taken at the top of the loop.
                    place.Grant(early);
                }
                else
                {
                    try
                    {
                        await wait.SleepAsync(cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is OperationCanceledException or TimeoutException && place.HasGrant)
                    {
                        // A grant already handed to this place wins over the cancellation or the timeout: taken at the
                        // top of the loop (never a call: it is found before one).
                    }
                }
            }
        }
        catch (Exception e) when (wait.Failed(e, cancellationToken))
        {
            throw; // never reached: the filter records the outcome and lets the exception pass
        }
        catch when (place is not null)
        {
            // Leave the line (a timeout, a cancellation, a failure): nothing of this wait stays on the server. If this
            // cannot reach the server, the place expires by itself: the heartbeat no longer renews it. A session that
            // ended took its recorded places with it on the server.
            wait.Dispose(); // before the place is left: the wake that leaving sends goes to the waits behind it
            Session session = wait.Session!;
            Leave(session, place);
            if (!session.IsEnded || !placeRecorded)
            {
                await GiveBackAsync(token: null, place.Ticket).ConfigureAwait(false);
            }

            throw;
        }
    }

    /// <summary>The wait got its permit (from its own call, or handed over by a release here): its place, if it had
    /// one, is left (the server removed it with the grant), and the lease is recorded in the session. Null when this
    /// process cannot count on the grant (see <see cref="GiveBackUnheldAsync"/>), with <paramref name="clockFailure"/>
    /// when that is because the clock could not create the lease's timer (a <see cref="TimeProvider"/> is user code).</summary>
    private PostgresLease? Granted(Session session, ref WaitPlace? place, long token, long sentAt, out Exception? clockFailure)
    {
        clockFailure = null;
        if (place is not null)
        {
            Leave(session, place);
            place = null;
        }

        LeaseTracker tracker;
        try
        {
            tracker = new LeaseTracker(session, token, 0, _coordinator.LeaseDuration, sentAt, WakeKey, _giveBack);
        }
        catch (Exception e)
        {
            clockFailure = e;
            return null;
        }

        if (!session.TryAdd(tracker))
        {
            return null; // lost at birth (its deadline had passed by the time the answer was handled), or the session ended
        }

        return new PostgresLease(this, tracker);
    }

    /// <summary>
    /// A grant this process cannot count on: its answer came after its lease's local deadline (the call or the process
    /// stalled for most of a lease), its lease's timer could not be created (the clock's exception is thrown), or the
    /// session ended here while the call ran (the server may still take it for a
    /// live one: a LISTEN connection that stopped answering keeps its backend). The server holds the permit for this
    /// process, so it is given back at once (not left held by no one until it expires), and the call fails.
    /// </summary>
    private async Task<PostgresLease> GiveBackUnheldAsync(Session session, long token, Exception? clockFailure)
    {
        await GiveBackAsync(token, ticket: null).ConfigureAwait(false);
        if (clockFailure is not null)
        {
            ExceptionDispatchInfo.Throw(clockFailure);
        }

        if (session.IsEnded)
        {
            throw session.CreateEndException();
        }

        throw new PostgresCoordinationException(
            "The permit was granted, but the answer came later than its lease allows (the lease duration less its " +
            "margin): it was given back. The process or its connection to the server stalled.");
    }

    private void Leave(Session session, WaitPlace place)
    {
        session.Remove(place);
        _places.TryRemove(new KeyValuePair<long, WaitPlace>(place.Ticket, place));
        _grants.TryRemove(place.Ticket, out _);
    }

    /// <summary>Gives a permit back. Never throws: when the server cannot be reached, the permit (no longer renewed)
    /// is free when its lease expires.</summary>
    public ValueTask ReleaseAsync(long token) => GiveBackAsync(token, ticket: null);

    /// <summary>Grants handed over by this coordinator and not yet taken by a wait, for tests.</summary>
    internal int GrantsWithoutAPlace => _grants.Count;

    /// <summary>Permits free now across all processes.</summary>
    public async ValueTask<int> GetFreeCountAsync(CancellationToken cancellationToken)
    {
        _coordinator.ThrowIfDisposed();
        return await _coordinator.Database.QueryAsync(
            "SELECT __schema__.permit_free($1::\"char\", $2, $3)",
            [Database.Parameter(_kind), Database.Parameter(Name), Database.Parameter(MaxCount)],
            static r => r.GetInt32(0),
            Database.Retry.Always,
            cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Gives a permit back, or leaves the wait line, then wakes the waits that may go ahead now. Never throws:
    /// what the server cannot be told about is no longer renewed, and expires.</summary>
    private async ValueTask GiveBackAsync(long? token, long? ticket)
    {
        long sentAt = _coordinator.Time.GetTimestamp(); // moved to when the statement is sent (not a wait for a connection)
        (bool ran, (bool OthersWait, long[]? Tickets, long[]? Tokens) result) = await _coordinator.Database.RunCleanupAsync(
            ReleaseSql,
            [
                Database.Parameter(_kind), Database.Parameter(Name), Database.Parameter(MaxCount), Database.Parameter(token),
                Database.Parameter(ticket), Database.Parameter(_coordinator.Owner),
            ],
            static r => (r.GetBoolean(0), r.IsDBNull(1) ? null : r.GetFieldValue<long[]>(1), r.IsDBNull(2) ? null : r.GetFieldValue<long[]>(2)),
            _coordinator.CleanupTimeout,
            () => sentAt = _coordinator.Time.GetTimestamp()).ConfigureAwait(false);
        if (!ran)
        {
            return;
        }

        // Permits granted to waits of this process: handed over here, each waking its own wait (the others here have
        // nothing new to find: every permit this freed is granted). A wait that has left meanwhile gave its permit
        // back with its place (see permit_release); one that asks the server first claims it there (the same token).
        // Published before the place is looked up, as the wait records its place before it looks for a grant: one of
        // the two sees the other, and only one takes the grant out.
        for (int i = 0; i < (result.Tickets?.Length ?? 0); i++)
        {
            long granted = result.Tickets![i];
            _grants[granted] = new PermitGrant(result.Tokens![i], sentAt);
            if (_places.TryGetValue(granted, out WaitPlace? place) && _grants.TryRemove(granted, out PermitGrant? grant))
            {
                place.Grant(grant);
            }
        }

        if (!_grants.IsEmpty)
        {
            DropStaleGrants();
        }

        if (result.Tickets is not { Length: > 0 })
        {
            // Granted to no live place: a wait here whose place expired on the server (which the server skips) may
            // take what this freed, and only a wake-up brings it to ask (this coordinator ignores its own notifications).
            _coordinator.Signals.Signal(WakeKey);
        }

        if (result.OthersWait)
        {
            _coordinator.Notifier.Request(WakeKey);
        }
    }

    /// <summary>
    /// Drops the grants older than a lease. A grant waits here only for the wait it was made to, which records its place
    /// within one round trip; one to a wait that left in the same instant is never taken (the wait gave the permit back
    /// with its place). One still awaited after a lease has expired on the server too (a grant handed over here counts
    /// as claimed, and is not kept by the place's ticket): its wait, asking the server, queues again.
    /// </summary>
    private void DropStaleGrants()
    {
        foreach (KeyValuePair<long, PermitGrant> entry in _grants)
        {
            if (_coordinator.Time.GetElapsedTime(entry.Value.SentAt) > _coordinator.LeaseDuration)
            {
                _grants.TryRemove(entry);
            }
        }
    }

    public override string ToString() => Name;
}
