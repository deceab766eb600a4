using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace AsyncPrimitives.Internal;

/// <summary>
/// The wait engine every primitive shares: one FIFO line of pooled <see cref="WaitNode{T}"/>s, guarded by the
/// owning primitive's lock, and the one acquire sequence every wait goes through.
/// </summary>
/// <typeparam name="T">What a wait hands the waiter, and what a waiting node carries (see <see cref="WaitNode{T}.Value"/>).</typeparam>
/// <typeparam name="TPolicy">The primitive's policy: when a caller is served at once, what a departure unblocks.</typeparam>
/// <remarks>
/// <para><b>Queued</b> (<see cref="WaitAsync(TPolicy, T, TimeSpan, CancellationToken)"/>): an already-cancelled token fails
/// the call; the policy's lock-free fast path, if it has one, may serve it; otherwise, under the lock, the policy
/// serves it if nobody waits ahead, or refuses it, or a zero timeout fails it, or it joins the tail of the line with
/// its cancellation registered. The timeout is armed after the lock is left (its callback takes the lock itself).</para>
/// <para><b>Granted</b>: whatever frees capacity (a release, a put, a notify) runs the primitive's own code under
/// the lock, which takes waiters from the head with <see cref="Dequeue"/> and decides each one's outcome with
/// <see cref="Serve"/> or <see cref="Fail"/> into a <see cref="Completions{T}"/>, completed after the lock is left.
/// A waiter that times out or is cancelled is unlinked here (<see cref="IWaitQueue{T}.Abandon"/>) under the same
/// lock, so exactly one party decides its outcome: a waiter that gave up holds nothing, a waiter that was served
/// keeps what it got. Then the policy hears of the departure (<see cref="IWaitPolicy{T}.OnWaiterLeft"/>).</para>
/// <para><b>Recycled</b> (<see cref="IWaitQueue{T}.Return"/>): once the awaiter has read the outcome, the node comes
/// back to the queue it was rented from, at most <see cref="WaitLines.PoolCapacity"/> of them.</para>
/// <para><b>Re-acquire</b>: a queue built with a <c>reacquire</c> queue (an <see cref="AsyncCondition"/>'s line,
/// whose waiters must hold the condition's lock again before they resume) does not complete the waiters that leave
/// it, notified or not: it moves them, in that order, to the tail of the lock's line
/// (<see cref="IWaitQueue{T}.Join"/>), as Java's AbstractQueuedSynchronizer moves a signalled node to its sync queue.
/// They are completed when the lock is handed to them.</para>
/// <para><b>Locks.</b> Members marked "lock held" require the caller to hold the lock given to the constructor.
/// The engine takes a second lock only in <see cref="IWaitQueue{T}.Join"/>, always a condition's lock first and
/// then its <see cref="AsyncLock"/>'s; nothing takes them the other way round. The engine runs no user code under
/// either: outcomes are delivered, and continuations scheduled, after every lock is left. (The one piece of user code
/// that does run under a primitive's lock is an <see cref="AsyncPriorityQueue{T}"/>'s comparer, called by its
/// store.)</para>
/// <para><b>Where a wait starts and ends</b>: a wait that could not be served at once starts in <see cref="Link"/>
/// and leaves the line in <see cref="Unlink"/>; its outcome is decided in <see cref="Serve"/> or
/// <see cref="Fail"/>. <b>Metrics</b> (<see cref="WaitMetrics"/>) follow it: a wait that queues while someone listens
/// is marked under the lock (<see cref="WaitNode{T}.Metering"/>), counted as a waiter once the lock is left, and
/// measured and counted out when its outcome is delivered (<see cref="IWaitQueue{T}.OnMeteredWaitEnded"/>), also outside
/// the lock, since a listener's callback is user code. A wait served at once is never metered, and nothing is recorded
/// for a wait that queued while nobody listened.</para>
/// </remarks>
internal sealed partial class WaitQueue<T, TPolicy> : IWaitQueue<T>, IWaitLine
    where TPolicy : struct, IWaitPolicy<T>
{
    private readonly TPolicy _policy;
    private readonly Lock _sync;
    private readonly TimeProvider _timeProvider;

    /// <summary>Where waiters go when they leave this line, served or not, or null: they resume at once.</summary>
    private readonly IWaitQueue<T>? _reacquire;

    /// <summary>The owner's type name without generic arity, the <c>asynctools.kind</c> tag of its waits.</summary>
    private readonly string _kind;

    /// <param name="kind">The owner's type name without generic arity (<c>AsyncQueue</c>), for metrics.</param>
    /// <param name="policy">The primitive's policy.</param>
    /// <param name="sync">The primitive's lock, which guards this queue.</param>
    /// <param name="timeProvider">The clock for timeouts.</param>
    /// <param name="reacquire">For an <see cref="AsyncCondition"/>: the line of its lock, which every waiter joins
    /// when it leaves this one.</param>
    public WaitQueue(string kind, TPolicy policy, Lock sync, TimeProvider timeProvider, IWaitQueue<T>? reacquire = null)
    {
        _kind = kind;
        _policy = policy;
        _sync = sync;
        _timeProvider = timeProvider;
        _reacquire = reacquire;
    }

    /// <summary>The owner's <c>Name</c>, the <c>asynctools.name</c> tag of its waits; set by the owner's <c>init</c>.</summary>
    public string? Name { get; set; }

    /// <summary>What a caller found under the lock.</summary>
    internal enum Entry
    {
        /// <summary>It could not be served now and may not wait.</summary>
        Unavailable,

        /// <summary>The policy served it now.</summary>
        Served,

        /// <summary>The policy refused it (<see cref="IWaitPolicy{T}.Refusal"/>).</summary>
        Refused,

        /// <summary>It joined the line.</summary>
        Queued,

        /// <summary>Its token was cancelled before it could join the line.</summary>
        Canceled,
    }

    /// <summary>What <see cref="Admit"/> decided under the lock: how the caller entered, what it got now (served), why
    /// it was refused, or the node it waits in (queued), and whether that wait is to be counted among the waiters
    /// once the lock is left (<see cref="WaitMetering.CountsAsWaiter"/>, read under the lock: by then the node may
    /// already be served and its metering reset).</summary>
    internal readonly record struct Admission(Entry Kind, T Result, Exception? Refusal, WaitNode<T>? Node, bool CountsAsWaiter = false)
    {
        /// <summary>A caller served without reaching the line (a keyed lock's key that nobody waits for has none yet).</summary>
        public static Admission Served(T result) => new(Entry.Served, result, null, null);

        /// <summary>A caller that could not be served now and may not wait, refused without reaching the line.</summary>
        public static Admission Unavailable => default;
    }

    /// <summary>
    /// The acquire sequence, for waits that hand the caller a value. Completes synchronously when the caller is
    /// served, refused or timed out at once; otherwise when a grant, the timeout or the cancellation decides.
    /// </summary>
    /// <param name="policy">The primitive's policy, made from the primitive's own <c>this</c> by the caller, so the fast
    /// path reads the primitive's fields directly rather than through this queue (the one the queue keeps is for
    /// callbacks: a waiter leaving, a condition's waiter joining).</param>
    /// <param name="offer">What the caller brings (see <see cref="WaitNode{T}.Value"/>); ignored by most policies.</param>
    /// <param name="timeout">A validated timeout: <see cref="Timeout.InfiniteTimeSpan"/>, zero, or positive.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ValueTask<T> WaitAsync(TPolicy policy, T offer, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<T>(cancellationToken);
        }

        return TryWithoutLock(policy, offer, out T result) ? new ValueTask<T>(result) : WaitSlowAsync(policy, offer, timeout, cancellationToken);
    }

    /// <summary>The acquire sequence, for waits whose success carries no value (a put, a join, an event).</summary>
    /// <inheritdoc cref="WaitAsync(TPolicy, T, TimeSpan, CancellationToken)"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ValueTask WaitWithoutResultAsync(TPolicy policy, T offer, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        return TryWithoutLock(policy, offer, out _) ? default : WaitWithoutResultSlowAsync(policy, offer, timeout, cancellationToken);
    }

    /// <summary>The non-waiting form (<c>TryXxx</c>): the steps under the lock, never queueing.</summary>
    /// <param name="policy">The primitive's policy, made from its own <c>this</c>.</param>
    /// <param name="offer">What the caller brings.</param>
    /// <param name="result">What the caller gets, when this returns true.</param>
    /// <param name="refusal">The policy's refusal, when this returns false because of one; else null.</param>
    /// <returns>True if the caller was served.</returns>
    public bool TryNow(TPolicy policy, T offer, out T result, out Exception? refusal)
    {
        Admission admission = Enter(policy, offer, mayWait: false, CancellationToken.None);
        result = admission.Result;
        refusal = admission.Refusal;
        return admission.Kind == Entry.Served;
    }

    /// <summary>Serves an unlinked waiter: it is handed <paramref name="result"/> once <paramref name="completions"/>
    /// are completed, after the lock. Lock held.</summary>
    public void Serve(WaitNode<T> node, T result, ref Completions<T> completions)
    {
        node.SetResult(result);
        node.Metering.Decide(MetricNames.Acquired);
        Deliver(node, ref completions);
    }

    /// <summary>Fails an unlinked waiter with <paramref name="error"/>. Lock held.</summary>
    /// <param name="node">The waiter.</param>
    /// <param name="error">What its wait throws.</param>
    /// <param name="outcome">How its wait ended, for metrics (a <see cref="MetricNames"/> outcome): a queue's shutdown,
    /// or an <see cref="AsyncResult{T}"/> set with an exception (which the wait acquired).</param>
    /// <param name="completions">Where the outcome is delivered from, after the lock.</param>
    public void Fail(WaitNode<T> node, ExceptionDispatchInfo error, string outcome, ref Completions<T> completions)
    {
        node.SetError(error);
        node.Metering.Decide(outcome);
        Deliver(node, ref completions);
    }

    /// <summary>Serves the oldest waiter with <paramref name="result"/>; false if nobody waits. Lock held.</summary>
    public bool TryServeNext(T result, ref Completions<T> completions)
    {
        if (Dequeue() is not { } node)
        {
            return false;
        }

        Serve(node, result, ref completions);
        return true;
    }

    /// <summary>Serves every waiter with <paramref name="result"/>, oldest first. Lock held.</summary>
    public void ServeAll(T result, ref Completions<T> completions)
    {
        while (TryServeNext(result, ref completions))
        {
        }
    }

    /// <summary>Fails every waiter, oldest first, with what <paramref name="error"/> gives it. Lock held.</summary>
    /// <param name="error">Called once per waiter: a new exception for each (a queue's shutdown), or one shared capture
    /// (a result set with an exception), which each rethrows as captured, never with another waiter's throw.</param>
    /// <param name="outcome">How each wait ended, for metrics.</param>
    /// <param name="completions">Where the outcomes are delivered from, after the lock.</param>
    public void FailAll(Func<ExceptionDispatchInfo> error, string outcome, ref Completions<T> completions)
    {
        while (Dequeue() is { } node)
        {
            Fail(node, error(), outcome, ref completions);
        }
    }

    void IWaitQueue<T>.Abandon(WaitNode<T> node, Exception error, string outcome)
    {
        var completions = default(Completions<T>);
        lock (_sync)
        {
            if (!ReferenceEquals(node.Queue, this))
            {
                return; // already served (it keeps what it got), or gone on to re-acquire a condition's lock
            }

            Unlink(node);
            Fail(node, ExceptionDispatchInfo.Capture(error), outcome, ref completions);
            _policy.OnWaiterLeft(ref completions);
        }

        completions.CompleteAll();
    }

    void IWaitQueue<T>.Join(WaitNode<T> node, ref Completions<T> completions)
    {
        // Called with the condition's lock held: this lock is always taken second.
        lock (_sync)
        {
            if (IsEmpty && _policy.TryAcquire(node.Value, willWait: true, ref completions, out T result))
            {
                Serve(node, result, ref completions);
            }
            else
            {
                Link(node);
            }
        }
    }

    /// <summary>The policy's lock-free fast path, if it has one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryWithoutLock(TPolicy policy, T offer, out T result)
    {
        var none = default(Completions<T>); // a lock-free path serves nobody else
        result = default!;
        return policy.HasLockFreePath && policy.TryAcquire(offer, willWait: false, ref none, out result);
    }

    /// <summary>
    /// The steps under the lock, for a primitive that must find the line itself under the lock it shares with many
    /// lines (<see cref="AsyncKeyedLock{TKey}"/>: one lock per stripe of keys, a line per contended key): served now
    /// if nobody waits ahead and the policy can, else refused, else (if <paramref name="mayWait"/>) queued at the
    /// tail. Lock held; complete <paramref name="completions"/> after it, then hand the admission to the
    /// <c>WaitAsync(admission, timeout, cancellationToken)</c> overload with the same token. The lock-free fast path
    /// and the already-cancelled check (step 1) are the caller's.
    /// </summary>
    /// <remarks>A queued waiter is cancellable from the moment it is in the line: its cancellation is registered here,
    /// under the lock and before it is linked, so a cancellation that completed before a grant always wins over that
    /// grant. (Registered after the lock, a wait could be served although its token had been cancelled before the
    /// release that served it.) A token cancelled in between fails the caller with <see cref="Entry.Canceled"/>.</remarks>
    public Admission Admit(TPolicy policy, T offer, bool mayWait, CancellationToken cancellationToken, ref Completions<T> completions)
    {
        AssertLockHeld();
        if (IsEmpty && policy.TryAcquire(offer, mayWait, ref completions, out T result))
        {
            return new Admission(Entry.Served, result, null, null);
        }

        if (policy.Refusal() is { } refusal)
        {
            return new Admission(Entry.Refused, default!, refusal, null);
        }

        if (!mayWait)
        {
            return new Admission(Entry.Unavailable, default!, null, null);
        }

        WaitNode<T> node = Rent();
        if (!node.Watch(cancellationToken))
        {
            // The node is left to the GC (see Watch). The policy was told the caller would wait (a lock-free policy
            // closed its fast path for it): it never joined, so it left.
            policy.OnWaiterLeft(ref completions);
            return new Admission(Entry.Canceled, default!, null, null);
        }

        node.Value = offer;
        Link(node);
        WaitMetering metering = WaitMetrics.Start();
        if (metering.IsActive)
        {
            node.Metering = metering; // a node out of the pool holds the defaults: nothing to write while nobody listens
        }

        return new Admission(Entry.Queued, default!, null, node, metering.CountsAsWaiter);
    }

    /// <summary>The steps after the lock: the caller's outcome now, or its queued wait armed with
    /// <paramref name="timeout"/> and <paramref name="cancellationToken"/>.</summary>
    public ValueTask<T> WaitAsync(in Admission admission, TimeSpan timeout, CancellationToken cancellationToken) => admission.Kind switch
    {
        Entry.Served => new ValueTask<T>(admission.Result),
        Entry.Queued => Arm(admission, timeout).AsValueTask(),
        Entry.Canceled => ValueTask.FromCanceled<T>(cancellationToken),
        _ => ValueTask.FromException<T>(admission.Refusal ?? ThrowHelper.TimeoutNow()),
    };

    private ValueTask<T> WaitSlowAsync(TPolicy policy, T offer, TimeSpan timeout, CancellationToken cancellationToken) =>
        WaitAsync(Enter(policy, offer, mayWait: timeout != TimeSpan.Zero, cancellationToken), timeout, cancellationToken);

    private ValueTask WaitWithoutResultSlowAsync(TPolicy policy, T offer, TimeSpan timeout, CancellationToken cancellationToken)
    {
        Admission admission = Enter(policy, offer, mayWait: timeout != TimeSpan.Zero, cancellationToken);
        return admission.Kind switch
        {
            Entry.Served => default,
            Entry.Queued => Arm(admission, timeout).AsNonGenericValueTask(),
            Entry.Canceled => ValueTask.FromCanceled(cancellationToken),
            _ => ValueTask.FromException(admission.Refusal ?? ThrowHelper.TimeoutNow()),
        };
    }

    /// <summary>Takes the lock for <see cref="Admit"/>; waiters it served in turn are completed after the lock.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Admission Enter(TPolicy policy, T offer, bool mayWait, CancellationToken cancellationToken)
    {
        var completions = default(Completions<T>);
        try
        {
            lock (_sync)
            {
                return Admit(policy, offer, mayWait, cancellationToken, ref completions);
            }
        }
        finally
        {
            // Also when the policy threw (a priority queue's comparer): what was decided before the throw is delivered. A
            // take serves waiting putters only once it has succeeded, so a comparer that throws has completed none of them.
            completions.CompleteAll();
        }
    }

    /// <summary>Starts a queued waiter's timeout, outside the lock: its callback takes the lock itself, and may find the
    /// outcome already decided (then it changes nothing). Its cancellation was registered in <see cref="Admit"/>. A
    /// metered wait is counted among the waiters here, also outside the lock (a listener's callback is user code); it
    /// may already have been served or cancelled, and counted out, by another thread: the count is a sum, so it comes
    /// right at once. A listener or a time provider that throws here (user code) fails the wait with that exception: it
    /// leaves the line holding nothing, as a cancelled wait does, so that no wait stays in line that its caller never
    /// got to see, to take a grant nobody would give back; a wait served meanwhile keeps what it got. The caller reads
    /// that outcome from the wait: what a listener throws again as the waits are counted out is not reported a second
    /// time.</summary>
    private WaitNode<T> Arm(in Admission admission, TimeSpan timeout)
    {
        Debug.Assert(admission.Kind == Entry.Queued && admission.Node is not null, "only a queued wait is armed");
        WaitNode<T> node = admission.Node!;
        try
        {
            if (admission.CountsAsWaiter)
            {
                WaitMetrics.Queued(_kind, Name);
            }

            node.ArmTimeout(timeout, _timeProvider);
        }
        catch (Exception e)
        {
            try
            {
                ((IWaitQueue<T>)this).Abandon(node, e, MetricNames.Error);
            }
#pragma warning disable CA1031 // the listener again, as the waits are counted out: each has its outcome, this one's is e
            catch (Exception)
#pragma warning restore CA1031
            {
            }
        }

        return node;
    }

    void IWaitQueue<T>.OnMeteredWaitEnded(in WaitMetering metering) => WaitMetrics.Ended(metering, _kind, Name);

    /// <summary>Where a served or failed waiter goes: completed after the lock, or on to re-acquire a condition's lock.</summary>
    private void Deliver(WaitNode<T> node, ref Completions<T> completions)
    {
        if (_reacquire is null)
        {
            completions.Add(node);
        }
        else
        {
            _reacquire.Join(node, ref completions);
        }
    }

}

/// <summary>What a <see cref="WaitNode{T}"/> needs of the queue it waits in.</summary>
internal interface IWaitQueue<T>
{
    /// <summary>
    /// Called by a node's cancellation or timeout callback on the node's home queue, outside any lock: if the node is
    /// still waiting there, it leaves the line holding nothing and fails with <paramref name="error"/>; if it was
    /// already served, nothing happens (it keeps what it was given).
    /// </summary>
    void Abandon(WaitNode<T> node, Exception error, string outcome);

    /// <summary>Takes back a node whose outcome the awaiter has observed.</summary>
    void Return(WaitNode<T> node);

    /// <summary>
    /// Called by a metered node (<see cref="WaitNode{T}.Metering"/>) of this line as its outcome is delivered, outside
    /// any lock: records the wait's duration and outcome and counts it out of the waiters, with this line's tags.
    /// </summary>
    void OnMeteredWaitEnded(in WaitMetering metering);

    /// <summary>
    /// A waiter that left another line (an <see cref="AsyncCondition"/>'s, notified or not) joins this one, with its
    /// outcome so far: it is served at once if the policy can and nobody waits, else it waits at the tail. It can no
    /// longer be cancelled or time out. Called with the other line's lock held.
    /// </summary>
    void Join(WaitNode<T> node, ref Completions<T> completions);
}
