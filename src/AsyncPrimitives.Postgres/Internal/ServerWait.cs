namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// One wait that asks the server until it gets what it waits for (an acquire, a get, a join): the session each call is
/// made under, and the one way the wait sleeps between two calls. Dispose it when the wait ends.
/// </summary>
/// <remarks>
/// <para>The wait takes its key's next signal <em>before</em> each call (<see cref="BeginCallAsync"/>), so a signal that
/// arrives while the call runs is not missed: the sleep after it then ends at once.</para>
/// <para><b>Metrics</b> (<see cref="WaitMetering"/>): a wait is metered from the moment it joins a line on the server
/// (<see cref="Queued"/>), or from its first sleep (or its timeout, if that came first); its outcome is recorded
/// once, by the caller's exception filter (<see cref="Failed"/>) when it fails, else by <see cref="Dispose"/>: a wait
/// that slept and did not fail got what it waited for. A wait served by its first call records nothing.</para>
/// </remarks>
internal sealed class ServerWait : IDisposable
{
    private readonly PostgresCoordinator _coordinator;
    private readonly TimeSpan _timeout;
    private readonly long _started;
    private readonly WakeSignals.Waiter? _signal;
    private Task _woken = Task.CompletedTask;
    private bool _retriedSession;

    /// <summary><see cref="Sending"/>, made once: passed to each call as what to run as its statement is sent.</summary>
    private Action? _sending;

    /// <summary>The wait's metrics; started by its first <see cref="SleepAsync"/>.</summary>
    private WaitMetering _metering;

    /// <summary>Starts a wait on <paramref name="wakeKey"/> of at most <paramref name="timeout"/>; with
    /// <see cref="TimeSpan.Zero"/> the wait makes one call and never sleeps. One signal of the key wakes at most
    /// <paramref name="wakeLimit"/> of its waits, and they poll between signals as <paramref name="polling"/> says (see
    /// <see cref="WakeSignals"/>). <paramref name="kind"/> and <paramref name="name"/> tag its metrics
    /// (<c>PostgresQueue</c>, the queue's name).</summary>
    public ServerWait(
        PostgresCoordinator coordinator, string kind, string name, string wakeKey, int wakeLimit, WakeSignals.Polling polling, TimeSpan timeout)
    {
        _metering = new WaitMetering(kind, name);
        _coordinator = coordinator;
        _timeout = timeout;
        _started = coordinator.Time.GetTimestamp();
        _signal = timeout != TimeSpan.Zero ? coordinator.Signals.Enter(wakeKey, wakeLimit, polling) : null;
    }

    /// <summary>Whether the wait may sleep (its timeout is not zero).</summary>
    public bool Waits => _signal is not null;

    /// <summary>The session of the last call; null before the first.</summary>
    public Session? Session { get; private set; }

    /// <summary>When the last call was sent (a local timestamp, taken by <see cref="Sending"/> once its connection was
    /// rented, not before: a wait for a pooled connection is not a lease's time): a lease it grants counts from then.</summary>
    public long SentAt { get; private set; }

    /// <summary>What a call runs as its statement is sent (see <see cref="Database"/>): stamps <see cref="SentAt"/>.</summary>
    public Action Sending => _sending ??= () => SentAt = _coordinator.Time.GetTimestamp();

    /// <summary>Before a call: the session to make it under (opened when there is none), and the signal a sleep after
    /// the call waits for.</summary>
    public async ValueTask<Session> BeginCallAsync(CancellationToken cancellationToken)
    {
        if (Session is { IsEnded: true } ended)
        {
            // Ended here while the wait was in progress: no further call under it, which the server might still take
            // for a live one. The wait fails with the others, once the session's rows are freed on the server (when
            // its LISTEN connection failed, that comes first; see Session).
            try
            {
                await Task.Delay(Timeout.Infinite, ended.Ended).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }

            throw ended.CreateEndException();
        }

        Session ??= await _coordinator.GetSessionAsync(cancellationToken).ConfigureAwait(false);
        _woken = _signal?.Arm() ?? Task.CompletedTask;
        SentAt = _coordinator.Time.GetTimestamp();
        return Session;
    }

    /// <summary>
    /// After a call failed because its session had ended (<see cref="Database.IsSessionEnded"/>): ends the session here.
    /// Returns true when the call may be made again under a new session: the session ended before the wait noticed,
    /// so once, and only while the wait holds nothing on the server (<paramref name="inProgress"/> false). Otherwise
    /// the wait fails with its session.
    /// </summary>
    public bool RetryAfterSessionEnded(PostgresCoordinationException exception, bool inProgress)
    {
        Session!.End(exception);
        if (inProgress || _retriedSession)
        {
            return false;
        }

        _retriedSession = true;
        Session = null;
        return true;
    }

    /// <summary>The exception of a wait whose timeout passed (or that could not wait at all).</summary>
    public static TimeoutException TimedOut() => new("The wait timed out.");

    /// <summary>
    /// Sleeps until the key is signalled, the wait's turn to poll comes (a poll interval from now or later; for a lock's
    /// or semaphore's wait further back in line, not before it is among the first: see <see cref="WakeSignals"/>), the
    /// timeout passes
    /// (<see cref="TimeoutException"/>, also when it already has), <paramref name="cancellationToken"/> is cancelled
    /// (<see cref="OperationCanceledException"/>), or the session ends (the session's end exception). A wait that may
    /// not sleep (<see cref="Waits"/> false) throws <see cref="TimeoutException"/> at once, unmetered: it never queued.
    /// </summary>
    public async Task SleepAsync(CancellationToken cancellationToken)
    {
        if (!Waits)
        {
            throw TimedOut();
        }

        // Metered from here, also when the timeout has passed already: the wait had to queue.
        _metering.Queued();
        TimeProvider time = _coordinator.Time;
        if (Sleep(Timeout.InfiniteTimeSpan) == TimeSpan.Zero)
        {
            throw TimedOut();
        }

        Session session = Session!;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, session.Ended);
        try
        {
            // Only the waits a signal could wake first poll (see WakeSignals): one further back in line sleeps until a
            // signal, or until it is among the first, and polls from then on.
            if (_signal!.BeginSleep() is { } promoted)
            {
                await Task.WhenAny(_woken, promoted).WaitAsync(Sleep(Timeout.InfiniteTimeSpan), time, linked.Token).ConfigureAwait(false);
                if (_woken.IsCompleted)
                {
                    return;
                }
            }

            TimeSpan due = _coordinator.PollInterval;
            while (true)
            {
                TimeSpan sleep = Sleep(due);
                try
                {
                    await _woken.WaitAsync(sleep, time, linked.Token).ConfigureAwait(false);
                    return;
                }
                catch (TimeoutException) when (sleep == due)
                {
                    // Its turn, unless the waits it takes turns with have looked meanwhile (a getter's: see WakeSignals).
                    due = _signal.UntilTurn(_coordinator.PollInterval);
                    if (due == TimeSpan.Zero)
                    {
                        return;
                    }
                }
            }
        }
        catch (TimeoutException)
        {
            // The timeout passed: ask the server once more (the next sleep throws at once).
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw session.CreateEndException();
        }
        catch (OperationCanceledException)
        {
            // With the caller's token, not the linked one (disposed by now): `catch ... when (e.CancellationToken == ct)`.
            cancellationToken.ThrowIfCancellationRequested();
            throw;
        }
    }

    /// <summary>How long a sleep of at most <paramref name="longest"/> may last: up to the wait's timeout, if that is
    /// sooner (zero once it has passed).</summary>
    private TimeSpan Sleep(TimeSpan longest)
    {
        if (_timeout == Timeout.InfiniteTimeSpan)
        {
            return longest;
        }

        TimeSpan left = TimeoutArgument.Remaining(_timeout, _coordinator.Time, _started);
        return left <= TimeSpan.Zero ? TimeSpan.Zero : longest == Timeout.InfiniteTimeSpan || left < longest ? left : longest;
    }

    /// <summary>The wait's call joined a line on the server: it is metered from now, also if a permit reaches it before
    /// it first sleeps.</summary>
    public void Queued() => _metering.Queued();

    /// <summary>After a call that looked for what the wait waits for (for a get: a take that did not stop at a lost lease):
    /// the next poll of the waits it takes turns with is due a poll interval after it was sent (see
    /// <see cref="WakeSignals"/>).</summary>
    public void Looked() => _signal?.Looked(SentAt);

    /// <summary>Wakes this wait alone (a release here handed its place a permit): it asks again, or takes the permit.</summary>
    public void Wake() => _signal?.Wake();

    /// <summary>Records the wait's place in line: signals of its key wake the waits first in line first.</summary>
    public void SetRank(long ticket) => _signal?.SetRank(ticket);

    /// <summary>
    /// An exception filter for the caller's wait loop (<c>catch (Exception e) when (wait.Failed(e, cancellationToken))</c>):
    /// records the wait's failure with <paramref name="error"/> and returns false, so the exception goes on as if not caught.
    /// </summary>
    public bool Failed(Exception error, CancellationToken cancellationToken) => _metering.Failed(error, cancellationToken);

    /// <summary>Ends the wait: its key no longer counts it, and a wake it did not use goes to the next; a wait that slept
    /// and did not fail is recorded as acquired. Idempotent.</summary>
    public void Dispose()
    {
        _signal?.Dispose();
        _metering.Acquired();
    }
}
