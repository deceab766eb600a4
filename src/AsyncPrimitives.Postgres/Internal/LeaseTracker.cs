using System.Diagnostics;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// The local side of one lease (a permit or a leased queue item): whether it is still held, its <c>Lost</c> token, and
/// the local deadline by which it counts as lost unless the heartbeat renews it.
/// </summary>
/// <remarks>
/// The deadline is the time the last successful acquire or renewal was <em>sent</em>, plus the lease duration, less
/// <see cref="Margin"/>. The server set the expiry from its own clock when it ran that statement, which was after it was
/// sent, so the lease is lost here before the server frees it: the process stops relying on it before anyone else can
/// get it, even when the timer fires late or the thread pool is slow to run the <c>Lost</c> callbacks (by up to the
/// margin). That holds for a lease freed by its expiry; one freed because the server ended the session (the backend
/// terminated, the connection seen closed) is free at once, and lost here when the session's end is heard of.
/// </remarks>
internal sealed class LeaseTracker
{
    private const int Held = 0;
    private const int Released = 1;
    private const int Lost = 2;

    private readonly Session _session;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _lost = new();
    private readonly ITimer _deadline;
    private int _state;

    private readonly Func<long, ValueTask>? _giveBack;

    /// <summary>Calls in flight that end the lease (a completion, an abandonment); see <see cref="IsEnding"/>.</summary>
    private int _ending;

    /// <param name="session">The session the lease was taken under; it must be ended or renewed for the lease to last.</param>
    /// <param name="id">The fencing token (a permit) or the lease token (a queue item).</param>
    /// <param name="itemId">The queue item's id (a delivery); 0 for a permit.</param>
    /// <param name="duration">How long the lease lasts without renewal.</param>
    /// <param name="sentAt">The local timestamp at which the statement that granted it was sent.</param>
    /// <param name="wakeKey">The key to wake when the lease is lost (others may take it now).</param>
    /// <param name="giveBack">Gives the lease back on the server (a permit's release; null for a delivery): for a lease
    /// the server renewed after it was lost here (see <see cref="GiveBackAfterLossAsync"/>).</param>
    public LeaseTracker(Session session, long id, long itemId, TimeSpan duration, long sentAt, string wakeKey, Func<long, ValueTask>? giveBack = null)
    {
        _session = session;
        _giveBack = giveBack;
        _time = session.Time;
        Id = id;
        ItemId = itemId;
        Duration = duration;
        WakeKey = wakeKey;
        _deadline = _time.CreateTimer(static s => ((LeaseTracker)s!).MarkLost(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        Renewed(sentAt);
    }

    public long Id { get; }

    public long ItemId { get; }

    /// <summary>Whether the lease is on a queue item (else on a permit): the heartbeat renews each with its own statement.</summary>
    public bool IsDelivery => ItemId != 0;

    public TimeSpan Duration { get; }

    public string WakeKey { get; }

    /// <summary>A delivery's queue's join key (see <see cref="PostgresQueue{T}.JoinKey"/>): when the lease ends without its
    /// consumer, the item may go to the dead letters and leave nothing unfinished.</summary>
    public string JoinKey => "j:" + WakeKey[2..];

    /// <summary>A permit's kind (<c>l</c> or <c>s</c>): the first character of its wake key (see <see cref="PermitSet.WakeKey"/>).</summary>
    public string PermitKind => WakeKey[..1];

    /// <summary>A permit's set name: its wake key after the kind and the colon.</summary>
    public string PermitName => WakeKey[2..];

    public Session Session => _session;

    /// <summary>Cancelled (from the thread pool, never inline) when the lease is lost; never when it is released.</summary>
    public CancellationToken LostToken => _lost.Token;

    public bool IsHeld => Volatile.Read(ref _state) == Held;

    public bool IsLost => Volatile.Read(ref _state) == Lost;

    /// <summary>Whether a call that ends the lease is in flight: a renewal that finds the lease gone leaves the verdict
    /// to that call, whose own answer says whether it ended the lease or found it lost (one that fails leaves the lease
    /// to the next renewal).</summary>
    public bool IsEnding => Volatile.Read(ref _ending) != 0;

    /// <summary>Marks a call that ends the lease as in flight, until <see cref="EndEnding"/>.</summary>
    public void BeginEnding() => Interlocked.Increment(ref _ending);

    /// <summary>The call that <see cref="BeginEnding"/> marked has its answer (or failed).</summary>
    public void EndEnding() => Interlocked.Decrement(ref _ending);

    /// <summary>How long before the server may free a lease it counts as lost here: a tenth of the lease duration, at
    /// most 1 s (a renewal is sent every third of it, so this fires only after two renewals in a row did not get through).</summary>
    public static TimeSpan Margin(TimeSpan duration) => TimeSpan.FromTicks(Math.Min(duration.Ticks / 10, TimeSpan.TicksPerSecond));

    /// <summary>Moves the deadline: the lease was renewed by a statement sent at <paramref name="sentAt"/>.</summary>
    public void Renewed(long sentAt)
    {
        TimeSpan left = TimeoutArgument.Remaining(Duration - Margin(Duration), _time, sentAt);
        if (left <= TimeSpan.Zero)
        {
            MarkLost();
            return;
        }

        if (IsHeld)
        {
            _deadline.Change(left, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>
    /// A lease lost here (by its deadline, while its renewal was held up at the server) that the renewal then renewed: the
    /// server holds it for a whole new lease, for no one, since nothing here counts on it any more and its holder's
    /// release does nothing. A permit is given back at once (as a grant answered late is); a delivery's item comes back
    /// when that lease expires. Never throws.
    /// </summary>
    public ValueTask GiveBackAfterLossAsync()
    {
        Debug.Assert(IsLost, "Only a lease lost here is given back this way.");
        return _giveBack?.Invoke(Id) ?? default;
    }

    /// <summary>Marks the lease released; false when it was already released or lost.</summary>
    public bool TryRelease()
    {
        if (Interlocked.CompareExchange(ref _state, Released, Held) != Held)
        {
            return false;
        }

        _deadline.Dispose();
        _session.Remove(this);
        return true;
    }

    /// <summary>Marks the lease lost and fires <see cref="LostToken"/>; nothing when it was released or lost before.</summary>
    public void MarkLost()
    {
        if (Interlocked.CompareExchange(ref _state, Lost, Held) != Held)
        {
            return;
        }

        _deadline.Dispose();
        _session.Remove(this);
        // The holder's callbacks run on the thread pool, not on the heartbeat's or the LISTEN loop's thread.
        ThreadPool.UnsafeQueueUserWorkItem(static cts => cts.Cancel(), _lost, preferLocal: false);
    }
}
