using System.Runtime.ExceptionServices;
using System.Text.Json;
using AsyncPrimitives.Postgres.Internal;

namespace AsyncPrimitives.Postgres;

/// <content>Taking items: one, one if waiting, or several in one round trip, and the call behind each.</content>
public sealed partial class PostgresQueue<T>
{
    /// <summary>Takes the next item, waiting until one is put.</summary>
    /// <param name="cancellationToken">Cancels the wait; a cancelled get took nothing.</param>
    /// <returns>The delivery: complete it when the work is done, or abandon it.</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down and nothing is left to deliver.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before an item was taken.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, the coordinator's connection
    /// failed during the wait, or a delivered item could not be read as <typeparamref name="T"/> (it was given back).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask<PostgresDelivery<T>> GetAsync(CancellationToken cancellationToken = default) =>
        GetOneAsync(Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Takes the next item, waiting at most <paramref name="timeout"/> until one is put.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/>
    /// to take one now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait; a cancelled get took nothing.</param>
    /// <returns>The delivery: complete it when the work is done, or abandon it.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">No item came within <paramref name="timeout"/>; nothing was taken.</exception>
    /// <exception cref="QueueShutDownException">The queue is shut down and nothing is left to deliver.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before an item was taken.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, the coordinator's connection
    /// failed during the wait, or a delivered item could not be read as <typeparamref name="T"/> (it was given back).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask<PostgresDelivery<T>> GetAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout); // at the call, not when awaited
        return GetOneAsync(timeout, cancellationToken);
    }

    private async ValueTask<PostgresDelivery<T>> GetOneAsync(TimeSpan timeout, CancellationToken cancellationToken) =>
        (await GetCoreAsync(1, timeout, throwOnTimeout: true, cancellationToken).ConfigureAwait(false))[0];

    /// <summary>Takes the next item if one is waiting. Never waits.</summary>
    /// <param name="cancellationToken">Cancels the call before it reaches the server.</param>
    /// <returns>The delivery, or null when no item is waiting.</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down and nothing is left to deliver.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the call.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, or the item could not be read
    /// as <typeparamref name="T"/> (it was given back).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public async ValueTask<PostgresDelivery<T>?> TryGetAsync(CancellationToken cancellationToken = default)
    {
        List<PostgresDelivery<T>> got = await GetCoreAsync(1, TimeSpan.Zero, throwOnTimeout: false, cancellationToken).ConfigureAwait(false);
        return got.Count == 0 ? null : got[0];
    }

    /// <summary>Takes up to <paramref name="maxCount"/> items in one round trip, waiting until at least one is put: the
    /// batch form of <see cref="GetAsync(CancellationToken)"/>. Complete them together with <see cref="CompleteManyAsync"/>.</summary>
    /// <param name="maxCount">The most items to take.</param>
    /// <param name="cancellationToken">Cancels the wait; a cancelled get took nothing.</param>
    /// <returns>One delivery or more, in the queue's order.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxCount"/> is not positive.</exception>
    /// <exception cref="QueueShutDownException">The queue is shut down and nothing is left to deliver.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before an item was taken.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, the coordinator's connection
    /// failed during the wait, or an item could not be read as <typeparamref name="T"/> (the whole batch was given back;
    /// the attempt counts only for the items that could not be read).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask<IReadOnlyList<PostgresDelivery<T>>> GetManyAsync(int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxCount); // at the call, not when awaited
        return GetSomeAsync(maxCount, Timeout.InfiniteTimeSpan, cancellationToken);
    }

    /// <summary>Takes up to <paramref name="maxCount"/> items in one round trip, waiting at most <paramref name="timeout"/>
    /// until at least one is put (see <see cref="GetManyAsync(int, CancellationToken)"/>).</summary>
    /// <param name="maxCount">The most items to take.</param>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/>
    /// to take what is there now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait; a cancelled get took nothing.</param>
    /// <returns>One delivery or more, in the queue's order.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxCount"/> is not positive, or <paramref name="timeout"/>
    /// is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">No item came within <paramref name="timeout"/>; nothing was taken.</exception>
    /// <exception cref="QueueShutDownException">The queue is shut down and nothing is left to deliver.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before an item was taken.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, the coordinator's connection
    /// failed during the wait, or an item could not be read as <typeparamref name="T"/> (the whole batch was given back;
    /// the attempt counts only for the items that could not be read).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask<IReadOnlyList<PostgresDelivery<T>>> GetManyAsync(int maxCount, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxCount); // at the call, not when awaited
        TimeoutArgument.ThrowIfInvalid(timeout);
        return GetSomeAsync(maxCount, timeout, cancellationToken);
    }

    private async ValueTask<IReadOnlyList<PostgresDelivery<T>>> GetSomeAsync(int maxCount, TimeSpan timeout, CancellationToken cancellationToken) =>
        await GetCoreAsync(maxCount, timeout, throwOnTimeout: true, cancellationToken).ConfigureAwait(false);

    private const string TakeSql =
        "SELECT item_id, item_lease_token, item_attempt, item_priority, item_payload::text, signal " +
        "FROM __schema__.queue_take($1, $2::\"char\", $3, $4, $5, $6, $7, $8, $9)";

    /// <summary>
    /// Takes up to <paramref name="maxCount"/> items: now or never (<paramref name="timeout"/> zero; an empty list, or
    /// <see cref="TimeoutException"/> when <paramref name="throwOnTimeout"/>), or waiting at most <paramref name="timeout"/>.
    /// <paramref name="completing"/>, unless completed or abandoned already, is completed by the first call, in the same
    /// round trip (see <see cref="ReadAllAsync"/>), or alone when <paramref name="cancellationToken"/> is already
    /// cancelled: cancellation never gives it back. When its lease was lost, nothing is taken and
    /// <see cref="PostgresLeaseLostException"/> is thrown, unless an immediate shutdown dropped its item (it is then
    /// finished, and the call finds the queue shut down).
    /// </summary>
    private async ValueTask<List<PostgresDelivery<T>>> GetCoreAsync(
        int maxCount, TimeSpan timeout, bool throwOnTimeout, CancellationToken cancellationToken, PostgresDelivery<T>? completing = null)
    {
        _coordinator.ThrowIfDisposed(); // before anything is sent: a loop's delivery was given back by the disposal
        if (completing is not null && !completing.EnterCompletion())
        {
            completing = null;
        }

        PostgresDelivery<T>? entered = completing;
        using var wait = new ServerWait(_coordinator, nameof(PostgresQueue<T>), Name, WakeKey, wakeLimit: 1, WakeSignals.Polling.ByTurns, timeout);
        bool waited = false;
        try
        {
            entered?.Tracker.BeginEnding(); // a renewal meanwhile leaves the verdict to the call that completes it
            if (cancellationToken.IsCancellationRequested)
            {
                // Cancelled already: nothing is taken, but a delivery to complete is completed first, alone. A
                // cancellation that comes later may lose the race with the call below, which then also takes the next item.
                if (completing is not null)
                {
                    await CompleteCoreAsync([completing], CancellationToken.None).ConfigureAwait(false);
                }

                cancellationToken.ThrowIfCancellationRequested();
            }

            if (completing?.Tracker.IsLost == true)
            {
                // Lost: throws, unless an immediate shutdown dropped it (then finished; the take below finds the queue
                // shut down).
                await CompleteCoreAsync([completing], CancellationToken.None).ConfigureAwait(false);
                completing = null;
            }

            while (true)
            {
                Session session = await wait.BeginCallAsync(completing is null ? cancellationToken : CancellationToken.None).ConfigureAwait(false);
                List<(long Id, long Token, int Attempt, int Priority, string? Payload, char Signal)> rows;
                try
                {
                    // Cancelled only until it is sent (not at all when it completes), never half-way (an item leased by a
                    // call whose answer is lost would wait for its lease to expire). Tried again after a lost answer: a
                    // twin lease is never renewed, so its item comes back. Not when it completes: a repeat would find its
                    // own completion and call it a loss.
                    rows = await _coordinator.Database.QueryAllAsync(
                        TakeSql,
                        [
                            Database.Parameter(Name), Database.Parameter(_orderCode), Database.Parameter(maxCount),
                            Database.Parameter(_coordinator.Owner), Database.Parameter(session.Key),
                            Database.Parameter(LeaseDuration), Database.Parameter(MaxAttempts),
                            Database.Parameter(completing?.Id), Database.Parameter(completing?.Tracker.Id),
                        ],
                        static r => r.IsDBNull(0)
                            ? (0L, 0L, 0, 0, (string?)null, r.GetChar(5))
                            : (r.GetInt64(0), r.GetInt64(1), r.GetInt32(2), r.GetInt32(3), r.GetString(4), '\0'),
                        completing is null ? Database.Retry.Always : Database.Retry.IfNotRun,
                        completing is null ? cancellationToken : CancellationToken.None,
                        Database.Cancel.BeforeSending,
                        wait.Sending).ConfigureAwait(false);
                }
                catch (PostgresCoordinationException e) when (Database.IsSessionEnded(e))
                {
                    if (!wait.RetryAfterSessionEnded(e, inProgress: waited || completing is not null))
                    {
                        throw;
                    }

                    continue;
                }

                bool shutDown = TakeSignals(rows, completing); // throws, having looked for nothing, when the lease was lost
                wait.Looked();
                if (shutDown && rows.Count == 0)
                {
                    _coordinator.Signals.Signal(WakeKey); // the next getter here sees the shutdown too
                    throw new QueueShutDownException($"The queue '{Name}' is shut down and empty.");
                }

                completing = null;

                if (rows.Count > 0)
                {
                    if (shutDown)
                    {
                        // A getter that looked while these items were being taken (or given back by this call) found
                        // nothing, and waits: the next getter here and in the other processes looks, and takes what is
                        // left or learns of the shutdown.
                        Wake(WakeKey);
                    }
                    else if (rows.Count == maxCount)
                    {
                        // More may be waiting (a notification may stand for several puts): the next getter here looks.
                        _coordinator.Signals.Signal(WakeKey);
                    }

                    return await DeliverAsync(rows, session, wait.SentAt).ConfigureAwait(false);
                }

                if (!wait.Waits)
                {
                    return throwOnTimeout ? throw ServerWait.TimedOut() : [];
                }

                waited = true;
                await wait.SleepAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (wait.Failed(e, cancellationToken))
        {
            throw; // never reached: the filter records the outcome and lets the exception pass
        }
        finally
        {
            entered?.Tracker.EndEnding();
            entered?.ExitCall();
        }
    }

    /// <summary>
    /// After a call of queue_take: takes the rows without an item out of <paramref name="rows"/> and acts on what they
    /// say. With <paramref name="completed"/> (the delivery the call completed): its lease was lost ('l':
    /// <see cref="PostgresLeaseLostException"/>, nothing was taken), else it is completed, and the joins are woken when
    /// the completion left nothing unfinished ('d'). Returns true when the queue is shut down: with no item, nothing
    /// waits ('s'); with items, they were taken ('S').
    /// </summary>
    private bool TakeSignals(List<(long Id, long Token, int Attempt, int Priority, string? Payload, char Signal)> rows, PostgresDelivery<T>? completed)
    {
        char signal = '\0';
        for (int i = rows.Count - 1; i >= 0; i--)
        {
            if (rows[i].Payload is not null)
            {
                continue;
            }

            if (rows[i].Signal == 'd')
            {
                Wake(JoinKey);
            }
            else
            {
                signal = rows[i].Signal;
            }

            rows.RemoveAt(i);
        }

        if (completed is not null)
        {
            if (signal == 'l')
            {
                completed.Tracker.MarkLost();
                throw new PostgresLeaseLostException(LeaseLostMessage(completed.Id));
            }

            completed.MarkFinished(PostgresDelivery<T>.Completed);
        }

        return signal is 's' or 'S';
    }

    private static string LeaseLostMessage(long id) =>
        $"The lease of item {id} was lost (it expired, or its session ended): the item was not completed, and may be with another consumer.";

    /// <summary>Turns leased rows into deliveries, in the queue's order, each with its lease in the session. When an
    /// item cannot be read as <typeparamref name="T"/>, or the clock cannot create a lease's timer, the whole batch is
    /// given back and the call fails.</summary>
    private async ValueTask<List<PostgresDelivery<T>>> DeliverAsync(
        List<(long Id, long Token, int Attempt, int Priority, string? Payload, char Signal)> rows, Session session, long sentAt)
    {
        rows.Sort(Order switch
        {
            QueueOrder.Lifo => static (a, b) => b.Id.CompareTo(a.Id),
            QueueOrder.Priority => static (a, b) => a.Priority != b.Priority ? a.Priority.CompareTo(b.Priority) : a.Id.CompareTo(b.Id),
            _ => static (a, b) => a.Id.CompareTo(b.Id),
        });

        var deliveries = new List<PostgresDelivery<T>>(rows.Count);
        bool late = false;
        Exception? unreadable = null;
        long unreadableId = 0;
        List<PostgresDelivery<T>>? unread = null;
        Exception? clockFailure = null;
        foreach ((long id, long token, int attempt, _, string? payload, _) in rows)
        {
            LeaseTracker tracker;
            try
            {
                tracker = new LeaseTracker(session, token, id, LeaseDuration, sentAt, WakeKey);
            }
            catch (Exception e)
            {
                // The clock could not create the lease's timer (a TimeProvider is user code): nothing is handed over.
                clockFailure = e;
                break;
            }

            T item = default!;
            bool read = true;
            try
            {
                item = JsonSerializer.Deserialize(payload!, _contract)!;
            }
#pragma warning disable CA1031 // Not swallowed: the first one is the inner exception of the call's failure, below.
            catch (Exception e)
#pragma warning restore CA1031
            {
                // The JSON does not fit T (JsonException), or T's own code refused it (a validating constructor).
                unreadable ??= e;
                unreadableId = unreadableId == 0 ? id : unreadableId;
                read = false;
            }

            var delivery = new PostgresDelivery<T>(this, attempt, item, tracker);
            deliveries.Add(delivery);
            if (!read)
            {
                (unread ??= []).Add(delivery);
            }

            if (!session.TryAdd(tracker))
            {
                // Lost at birth: the answer came after the leases' local deadline, or the session ended meanwhile (the
                // server may still take it for a live one: a LISTEN connection that stopped answering keeps its backend).
                late = true;
            }
        }

        // Items the call cannot hand over (this process cannot count on their leases: the answer came after their local
        // deadline, or the session ended; or one cannot be read) are all given back at once, not left leased to no one
        // until they expire. The attempt counts, except for readable items given back only because another could not be
        // read: an unreadable item never takes its neighbours to the dead letters.
        Exception? failure = null;
        if (clockFailure is not null)
        {
            failure = clockFailure;
            for (int i = deliveries.Count; i < rows.Count; i++)
            {
                await ReturnUntrackedAsync(rows[i].Id, rows[i].Token).ConfigureAwait(false);
            }
        }
        else if (late)
        {
            failure = session.IsEnded
                ? session.CreateEndException()
                : new PostgresCoordinationException(
                    $"Items of the queue '{Name}' were taken, but the answer came later than their lease allows (the lease " +
                    "duration less its margin): they were given back. The process or its connection to the server stalled.");
        }
        else if (unreadable is not null)
        {
            failure = new PostgresCoordinationException(
                $"Item {unreadableId} of the queue '{Name}' could not be read as {typeof(T)}; the items taken were given back " +
                $"(after {MaxAttempts} deliveries it moves to the dead letters).",
                unreadable);
        }

        if (failure is null)
        {
            return deliveries;
        }

        foreach (PostgresDelivery<T> delivery in deliveries)
        {
            await delivery.GiveBackAsync(counted: clockFailure is null && (late || unread?.Contains(delivery) == true)).ConfigureAwait(false);
        }

        if (clockFailure is not null)
        {
            ExceptionDispatchInfo.Throw(clockFailure); // as thrown by the clock
        }

        throw failure;
    }
}
