using System.Diagnostics;
using System.Globalization;
using AsyncPrimitives.Postgres.Internal;

namespace AsyncPrimitives.Postgres;

/// <summary>
/// An item of a <see cref="PostgresQueue{T}"/> delivered to this process, under a lease that the coordinator renews
/// until the delivery is completed or abandoned. Complete it when the work is done (<see cref="CompleteAsync"/>, the
/// in-memory queues' <c>TaskDone</c>); give it back with <see cref="AbandonAsync"/>; disposing it gives it back unless
/// it was completed.
/// </summary>
/// <typeparam name="T">The item type.</typeparam>
[DebuggerDisplay("{ToString(),nq}")]
public sealed class PostgresDelivery<T> : IAsyncDisposable
{
    internal const int Open = 0;
    internal const int Completed = 1;
    internal const int Abandoned = 2;

    /// <summary><see cref="Open"/>, <see cref="Completed"/> or <see cref="Abandoned"/>; moves once, from open.</summary>
    private int _state;

    /// <summary>1 while a completion or an abandonment of this delivery is in flight.</summary>
    private int _busy;

    internal PostgresDelivery(PostgresQueue<T> queue, int attempt, T item, LeaseTracker tracker)
    {
        Queue = queue;
        Attempt = attempt;
        Item = item;
        Tracker = tracker;
    }

    /// <summary>
    /// An open delivery that nothing references any more can never be completed or abandoned (an operator that read it
    /// ahead dropped it, or its holder forgot it): its lease is no longer renewed, so its item comes back, its attempt
    /// counted, once the lease expires on the server.
    /// </summary>
    ~PostgresDelivery()
    {
        if (State == Open)
        {
            Tracker.MarkLost();
        }
    }

    /// <summary>The item.</summary>
    public T Item { get; }

    /// <summary>The item's id: unique in the schema, increasing in put order, the same on every delivery of the item.</summary>
    public long Id => Tracker.ItemId;

    /// <summary>Which delivery of the item this is: 1 the first time, 2 after one delivery ended without completion
    /// (counted on the server, so a consumer that crashed counts too).</summary>
    public int Attempt { get; }

    /// <summary>
    /// Cancelled when the lease is lost: it could not be renewed for a lease duration (less a margin for this process's
    /// own delays: a tenth of it, at most 1 s, so that this fires before the server frees the item), or the coordinator's session
    /// ended, or an immediate shutdown dropped the item. The item may then be delivered to another consumer, and a
    /// completion is refused. A session the server ended itself (it terminated the backend, restarted, or saw the
    /// connection close) frees the item at once: another consumer may get it before this process hears of the end and
    /// this fires. Never cancelled by completing or abandoning. Callbacks run on the thread pool.
    /// </summary>
    public CancellationToken Lost => Tracker.LostToken;

    internal PostgresQueue<T> Queue { get; }

    internal LeaseTracker Tracker { get; }

    internal int State => Volatile.Read(ref _state);

    /// <summary>
    /// Completes the item: it is deleted from the queue, never delivered again, and no longer unfinished. Idempotent.
    /// </summary>
    /// <param name="cancellationToken">Cancels the call until it reaches the server (once there, it runs to its answer); a
    /// cancelled completion did not happen.</param>
    /// <returns>A task that completes when the server has completed the item.</returns>
    /// <exception cref="PostgresLeaseLostException">The lease was lost before the completion reached the server (see
    /// <see cref="Lost"/>): the item was not completed and may be with another consumer. (Not once the queue has had an
    /// immediate shutdown: a completion whose item is gone is then a no-op, as the shutdown may have dropped it.)</exception>
    /// <exception cref="InvalidOperationException">The delivery was abandoned, or another completion or abandonment of
    /// it is in progress.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled; the item was not completed.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed (its disposal gave the item back).</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached. The lease is still held (and
    /// renewed): the call may be repeated.</exception>
    public async ValueTask CompleteAsync(CancellationToken cancellationToken = default)
    {
        if (State == Completed)
        {
            return;
        }

        EnterCall();
        try
        {
            await Queue.CompleteCoreAsync([this], cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>
    /// Gives the item back: it is delivered again at once (to any consumer), or moves to the dead letters if this was
    /// its <see cref="PostgresQueueOptions.MaxAttempts"/>-th delivery. Idempotent. For a lost lease nothing is sent (the
    /// item is no longer this delivery's to give back); the delivery still counts as abandoned, so a
    /// <see cref="PostgresQueue{T}.ReadAllAsync"/> loop goes on to the next item.
    /// </summary>
    /// <param name="cancellationToken">Cancels the call until it reaches the server (once there, it runs to its answer);
    /// the lease then still holds.</param>
    /// <returns>A task that completes when the server has taken the item back.</returns>
    /// <exception cref="InvalidOperationException">The delivery was completed, or another completion or abandonment of
    /// it is in progress.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached. The lease is still held (and
    /// renewed): the call may be repeated.</exception>
    public async ValueTask AbandonAsync(CancellationToken cancellationToken = default)
    {
        switch (State)
        {
            case Abandoned:
                return;
            case Completed:
                throw new InvalidOperationException($"The delivery of item {Id} was completed; it cannot be abandoned.");
        }

        EnterCall();
        if (Tracker.IsLost)
        {
            MarkFinished(Abandoned); // nothing to give back on the server
            ExitCall();
            return;
        }

        try
        {
            await Queue.AbandonCoreAsync(this, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>
    /// Gives the item back (as <see cref="AbandonAsync"/>) unless the delivery was completed or abandoned. Never throws:
    /// when the server cannot be reached, the lease is no longer renewed, and the item comes back when it expires.
    /// </summary>
    /// <returns>A task that completes when the item is given back, or left to expire.</returns>
    public ValueTask DisposeAsync()
    {
        if (!Tracker.IsLost)
        {
            return GiveBackAsync();
        }

        SettleLost();
        return default;
    }

    /// <summary>
    /// Gives the item back unless the delivery was completed or abandoned, also when its lease counts as lost here (a
    /// get that cannot hand over what it took gives it all back). Never throws (see <see cref="DisposeAsync"/>).
    /// </summary>
    /// <param name="counted">False for an item its get never handed over for another item's failure: its attempt is not
    /// counted (see <see cref="PostgresQueue{T}.AbandonCoreAsync"/>).</param>
    internal async ValueTask GiveBackAsync(bool counted = true)
    {
        if (State != Open || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            return;
        }

        try
        {
            using var timeout = new CancellationTokenSource(Queue.LeaseDuration);
            await Queue.AbandonCoreAsync(this, timeout.Token, counted).ConfigureAwait(false);
        }
        catch (Exception e) when (e is PostgresCoordinationException or OperationCanceledException)
        {
            // Left to expire: no longer renewed, the item comes back at the latest one lease duration from now.
            MarkFinished(Abandoned);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <inheritdoc />
    public override string ToString() => string.Format(
        CultureInfo.InvariantCulture,
        "PostgresDelivery<{0}>(queue={1}, id={2}, attempt={3}, {4})",
        typeof(T).Name,
        Queue.Name,
        Id,
        Attempt,
        State switch
        {
            Completed => "completed",
            Abandoned => "abandoned",
            _ => Tracker.IsLost ? "lost" : "held",
        });

    /// <summary>
    /// Records that the holder disposed of a delivery whose lease was lost (nothing to give back on the server), unless a
    /// call is in progress: a reading loop then only takes the next item, as after any abandonment by its body.
    /// </summary>
    private void SettleLost()
    {
        if (Interlocked.CompareExchange(ref _busy, 1, 0) == 0)
        {
            MarkFinished(Abandoned);
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>Records the end of the delivery; its lease is no longer renewed.</summary>
    internal void MarkFinished(int state)
    {
        Interlocked.CompareExchange(ref _state, state, Open);
        Tracker.TryRelease();
        GC.SuppressFinalize(this);
    }

    /// <summary>Before the reading loop completes this delivery with its next get: false when it was completed or
    /// abandoned already; throws when another completion or abandonment is in progress. Ended by <see cref="ExitCall"/>.</summary>
    internal bool EnterCompletion()
    {
        if (State != Open)
        {
            return false;
        }

        EnterCall();
        return true;
    }

    internal void ExitCall() => Volatile.Write(ref _busy, 0);

    private void EnterCall()
    {
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            throw new InvalidOperationException($"Another completion or abandonment of item {Id} is in progress.");
        }
    }
}
