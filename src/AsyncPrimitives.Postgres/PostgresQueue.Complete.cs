using AsyncPrimitives.Postgres.Internal;

namespace AsyncPrimitives.Postgres;

/// <content>Completing deliveries in a batch, and giving one back: the calls that end deliveries.</content>
public sealed partial class PostgresQueue<T>
{
    /// <summary>
    /// Completes several deliveries of this queue in one round trip: the batch form of
    /// <see cref="PostgresDelivery{T}.CompleteAsync"/>. Every delivery whose lease still holds is completed, even when
    /// others' leases were lost; deliveries completed before are skipped.
    /// </summary>
    /// <param name="deliveries">Deliveries of this queue; nothing is done for none.</param>
    /// <param name="cancellationToken">Cancels the call until it reaches the server (once there, it runs to its answer); a
    /// cancelled call completed nothing.</param>
    /// <returns>A task that completes when the deliveries are completed.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="deliveries"/> is null or holds null.</exception>
    /// <exception cref="ArgumentException">A delivery belongs to another queue object.</exception>
    /// <exception cref="InvalidOperationException">A delivery was abandoned, or another completion or abandonment of it
    /// is in progress; nothing was completed.</exception>
    /// <exception cref="PostgresLeaseLostException">Some deliveries were not completed: their leases were lost (they
    /// expired, or their session ended), so their items may be with other consumers. The others were completed.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled; nothing was completed.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask CompleteManyAsync(IEnumerable<PostgresDelivery<T>> deliveries, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(deliveries);
        PostgresDelivery<T>[] batch = [.. deliveries];
        foreach (PostgresDelivery<T> delivery in batch)
        {
            if (delivery is null)
            {
                throw new ArgumentNullException(nameof(deliveries), "A delivery is null.");
            }

            if (delivery.Queue != this)
            {
                throw new ArgumentException($"A delivery of '{delivery.Queue.Name}' cannot be completed through this queue object.", nameof(deliveries));
            }
        }

        _coordinator.ThrowIfDisposed();
        return CompleteManyCoreAsync(batch, cancellationToken);
    }

    /// <summary>Completes <paramref name="batch"/> holding each open delivery's call, as its own
    /// <see cref="PostgresDelivery{T}.CompleteAsync"/> would: a completion of it in progress is never raced (and then
    /// taken for a lost lease when it wins).</summary>
    private async ValueTask CompleteManyCoreAsync(PostgresDelivery<T>[] batch, CancellationToken cancellationToken)
    {
        var entered = new List<PostgresDelivery<T>>(batch.Length);
        try
        {
            foreach (PostgresDelivery<T> delivery in batch.Distinct())
            {
                if (delivery.EnterCompletion()) // throws when another call on it is in progress
                {
                    entered.Add(delivery);
                }
            }

            await CompleteCoreAsync(batch, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            entered.ForEach(d => d.ExitCall());
        }
    }

    /// <summary>Completes <paramref name="batch"/>: one call of the server's queue_complete.</summary>
    internal async ValueTask CompleteCoreAsync(PostgresDelivery<T>[] batch, CancellationToken cancellationToken)
    {
        _coordinator.ThrowIfDisposed();
        cancellationToken.ThrowIfCancellationRequested();
        var open = new List<PostgresDelivery<T>>(batch.Length);
        List<PostgresDelivery<T>>? lostHere = null;
        Exception? unknown = null;
        int lost = 0;
        foreach (PostgresDelivery<T> delivery in batch)
        {
            switch (delivery.State)
            {
                case PostgresDelivery<T>.Completed:
                    break;
                case PostgresDelivery<T>.Abandoned:
                    throw new InvalidOperationException($"The delivery of item {delivery.Id} was abandoned; it cannot be completed.");
                default:
                    if (delivery.Tracker.IsLost)
                    {
                        (lostHere ??= []).Add(delivery);
                    }
                    else
                    {
                        open.Add(delivery);
                    }

                    break;
            }
        }

        if (open.Count > 0)
        {
            Database database = _coordinator.Database;
            (long[] Completed, bool Drained) result;
            open.ForEach(d => d.Tracker.BeginEnding()); // a renewal meanwhile leaves the verdict to this call
            try
            {
                // Not tried again when the answer may be lost: a repeat would find its own completion and call it a loss.
                // Items an immediate shutdown dropped count as completed (see queue_complete).
                result = await database.QueryAsync(
                    "SELECT completed, drained FROM __schema__.queue_complete($1, $2, $3, $4)",
                    [
                        Database.Parameter(Name), Database.Parameter(open.Select(d => d.Id).ToArray()),
                        Database.Parameter(open.Select(d => d.Tracker.Id).ToArray()), Database.Parameter(_coordinator.Owner),
                    ],
                    static r => (r.GetFieldValue<long[]>(0), r.GetBoolean(1)),
                    Database.Retry.IfNotRun,
                    cancellationToken,
                    Database.Cancel.BeforeSending).ConfigureAwait(false);

                var completed = new HashSet<long>(result.Completed);
                foreach (PostgresDelivery<T> delivery in open)
                {
                    if (completed.Contains(delivery.Id))
                    {
                        delivery.MarkFinished(PostgresDelivery<T>.Completed);
                    }
                    else
                    {
                        delivery.Tracker.MarkLost();
                        lost++;
                    }
                }
            }
            finally
            {
                open.ForEach(d => d.Tracker.EndEnding());
            }

            if (result.Drained)
            {
                Wake(JoinKey);
            }
        }

        if (lostHere is not null)
        {
            // Lost as the heartbeat saw it (looked at after the others are completed): an immediate shutdown may have
            // dropped the items, and then their completion is a no-op (as queue_complete counts it for the others). No
            // longer cancelled once the others were completed: a cancelled call completed nothing.
            bool dropped;
            (dropped, unknown) = await DroppedByShutdownAsync(open.Count > 0 ? CancellationToken.None : cancellationToken).ConfigureAwait(false);
            if (dropped)
            {
                lostHere.ForEach(d => d.MarkFinished(PostgresDelivery<T>.Completed));
            }
            else
            {
                lost += lostHere.Count;
            }
        }

        if (lost > 0)
        {
            throw new PostgresLeaseLostException(
                batch.Length == 1
                    ? LeaseLostMessage(batch[0].Id)
                    : $"The leases of {lost} of the {batch.Length} items were lost (they expired, or their session ended): those items were not completed, and may be with other consumers.",
                unknown);
        }
    }

    /// <summary>
    /// Whether an immediate shutdown dropped this queue's items: a delivery whose lease the heartbeat found gone is then
    /// finished (nothing is left unfinished), not lost. A server that cannot be asked leaves it lost: its failure is
    /// what the <see cref="PostgresLeaseLostException"/> then carries.
    /// </summary>
    private async ValueTask<(bool Dropped, Exception? Failure)> DroppedByShutdownAsync(CancellationToken cancellationToken)
    {
        try
        {
            return (await _coordinator.Database.QueryAsync(
                "SELECT EXISTS (SELECT 1 FROM __schema__.queues WHERE name = $1 AND immediate)",
                [Database.Parameter(Name)],
                static r => r.GetBoolean(0),
                Database.Retry.Always,
                cancellationToken).ConfigureAwait(false), null);
        }
        catch (PostgresCoordinationException e)
        {
            return (false, e);
        }
    }

    /// <summary>
    /// Puts an item back in line as if its get had not taken it (its attempt not counted), when the caller still holds it,
    /// its lease unexpired and its session alive: 'r', or 'n' (an expired delivery, or one of a dead session, which the
    /// other processes already count as ended, is left to the reclaim, which ends it counted). A statement on the table
    /// rather than a function, so that it works on a schema whose functions are of an earlier revision of its version
    /// (see <see cref="Database.Revision"/>).
    /// </summary>
    private const string ReturnSql =
        "WITH r AS (UPDATE __schema__.queue_items q SET lease_token = NULL, lease_owner = NULL, session = NULL, lease = NULL, " +
        "leased_until = NULL, max_attempts = NULL, attempts = q.attempts - 1 " +
        "WHERE q.id = $1 AND q.lease_token = $2 AND q.lease_owner = $3 " +
        "AND coalesce(q.leased_until, '-infinity') > clock_timestamp() AND __schema__.session_alive(q.session) RETURNING 1) " +
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM r) THEN 'r' ELSE 'n' END";

    /// <summary>Puts back in line, its attempt not counted, an item a get took but could not hand over before it had a
    /// delivery (its lease's timer could not be created). Never throws: an item the server cannot be told about comes
    /// back when its lease expires.</summary>
    private async ValueTask ReturnUntrackedAsync(long id, long token)
    {
        (bool ran, string? outcome) = await _coordinator.Database.RunCleanupAsync(
            ReturnSql,
            [Database.Parameter(id), Database.Parameter(token), Database.Parameter(_coordinator.Owner)],
            static r => r.GetString(0),
            _coordinator.CleanupTimeout).ConfigureAwait(false);
        if (ran && outcome == "r")
        {
            Wake(WakeKey);
        }
    }

    /// <summary>
    /// Gives a delivery back (see <see cref="PostgresDelivery{T}.AbandonAsync"/>); unless <paramref name="counted"/>, as
    /// an item its get never handed over because another item of its batch could not be read: back in line with its
    /// attempt not counted, so that it never moves to the dead letters for another item's failure.
    /// </summary>
    internal async ValueTask AbandonCoreAsync(PostgresDelivery<T> delivery, CancellationToken cancellationToken, bool counted = true)
    {
        Database database = _coordinator.Database;
        string outcome;
        delivery.Tracker.BeginEnding(); // a renewal meanwhile leaves the verdict to this call
        try
        {
            outcome = (await database.QueryAsync(
                counted ? "SELECT __schema__.queue_abandon($1, $2, $3)::text" : ReturnSql,
                [Database.Parameter(delivery.Id), Database.Parameter(delivery.Tracker.Id), Database.Parameter(_coordinator.Owner)],
                static r => r.GetString(0),
                Database.Retry.Always,
                cancellationToken,
                Database.Cancel.BeforeSending).ConfigureAwait(false))!;
            delivery.MarkFinished(PostgresDelivery<T>.Abandoned);
        }
        finally
        {
            delivery.Tracker.EndEnding();
        }
        if (outcome == "r")
        {
            Wake(WakeKey);
        }
        else if (outcome == "d")
        {
            Wake(JoinKey);
        }
    }
}
