using System.Diagnostics;

namespace AsyncPrimitives.Internal;

/// <summary>
/// The wait engine every primitive shares: a strictly FIFO, intrusive, doubly linked list of pooled
/// <see cref="WaitNode{T}"/>s, guarded by the owning primitive's lock.
/// </summary>
/// <remarks>
/// <para>A primitive is policy on top of this engine: under its lock it decides whether a caller can proceed now;
/// if not it calls <see cref="Enqueue"/>, leaves the lock, and returns <see cref="Arm"/>'s ValueTask. Whatever
/// frees capacity (a release, a put, a get, a notify) dequeues waiters under the lock, records each one's outcome,
/// and collects them in a <see cref="Completions{T}"/> that it completes after leaving the lock.</para>
/// <para>Cancellation and timeout unlink a waiter in O(1) under the same lock, so a waiter that gave up never holds
/// anything, and a waiter that was granted something keeps it. After a waiter leaves that way the owner's
/// <see cref="IWaitOwner{T}.OnWaiterLeft"/> runs, still under the lock, so a policy that depends on the queue's
/// shape (a writer at the head holding back readers) can grant whoever is now unblocked.</para>
/// <para>Every member except <see cref="Arm"/> and <see cref="Abandon"/> requires the caller to hold the lock.</para>
/// </remarks>
internal sealed class WaitQueue<T>
{
    /// <summary>Nodes kept for reuse; beyond this a burst of waiters is left to the GC.</summary>
    private const int MaxPooled = 32;

    private readonly Lock _sync;
    private readonly IWaitOwner<T>? _owner;
    private readonly TimeProvider _timeProvider;

    /// <summary>Oldest waiter: the next to be served. Null when the queue is empty.</summary>
    private WaitNode<T>? _head;

    /// <summary>Newest waiter. Null when the queue is empty.</summary>
    private WaitNode<T>? _tail;

    /// <summary>Number of linked waiters.</summary>
    private int _count;

    /// <summary>Free list of recycled nodes, linked through <see cref="WaitNode{T}.Next"/>. Guarded by the lock.</summary>
    private WaitNode<T>? _pool;

    /// <summary>Number of nodes in <see cref="_pool"/>.</summary>
    private int _pooled;

    /// <summary>
    /// One recycled node kept outside the lock: an awaiter returns its node here with a plain write, so the common
    /// contended cycle (wait, get granted, wait again) does not take the lock a third time just to recycle. Only
    /// <see cref="Enqueue"/> (under the lock) takes from it, and <see cref="Return"/> only fills it when empty, so a
    /// race between them can at worst overwrite a node, which the GC then collects: never hand one node out twice.
    /// </summary>
    private WaitNode<T>? _cached;

    public WaitQueue(Lock sync, TimeProvider timeProvider, IWaitOwner<T>? owner = null)
    {
        _sync = sync;
        _timeProvider = timeProvider;
        _owner = owner;
    }

    /// <summary>The number of waiters in the queue.</summary>
    public int Count => _count;

    /// <summary>True when nobody waits.</summary>
    public bool IsEmpty => _head is null;

    /// <summary>The oldest waiter, or null.</summary>
    public WaitNode<T>? Head => _head;

    /// <summary>Number of recycled nodes held for reuse (for leak tests).</summary>
    internal int PooledCount => _pooled + (Volatile.Read(ref _cached) is null ? 0 : 1);

    /// <summary>Appends a waiter to the tail. Caller holds the lock, then leaves it and calls <see cref="Arm"/>.</summary>
    public WaitNode<T> Enqueue(T payload = default!, int kind = 0)
    {
        AssertLockHeld();
        WaitNode<T>? node = Volatile.Read(ref _cached);
        if (node is not null)
        {
            Volatile.Write(ref _cached, null);
        }
        else
        {
            node = _pool;
            if (node is not null)
            {
                _pool = node.Next;
                _pooled--;
            }
            else
            {
                node = new WaitNode<T>(this);
            }
        }

        node.Prepare(payload, kind);
        node.Next = null;
        node.Previous = _tail;
        if (_tail is null)
        {
            _head = node;
        }
        else
        {
            _tail.Next = node;
        }

        _tail = node;
        node.IsQueued = true;
        _count++;
        return node;
    }

    /// <summary>
    /// Starts the waiter's timeout and cancellation and returns what the caller awaits. Call outside the lock,
    /// right after <see cref="Enqueue"/>: callbacks that fire now take the lock themselves.
    /// </summary>
    public ValueTask<T> Arm(WaitNode<T> node, TimeSpan timeout, CancellationToken cancellationToken)
    {
        node.Arm(timeout, cancellationToken, _timeProvider);
        return node.AsValueTask();
    }

    /// <summary>As <see cref="Arm"/>, for waits whose result carries no value (put, join).</summary>
    public ValueTask ArmNonGeneric(WaitNode<T> node, TimeSpan timeout, CancellationToken cancellationToken)
    {
        node.Arm(timeout, cancellationToken, _timeProvider);
        return node.AsNonGenericValueTask();
    }

    /// <summary>Unlinks and returns the oldest waiter, or null. Caller holds the lock and records its outcome.</summary>
    public WaitNode<T>? Dequeue()
    {
        AssertLockHeld();
        WaitNode<T>? node = _head;
        if (node is not null)
        {
            Unlink(node);
        }

        return node;
    }

    /// <summary>Unlinks every waiter, recording <paramref name="error"/> as each one's outcome, into <paramref name="completions"/>.</summary>
    public void DrainWithError(Exception error, ref Completions<T> completions)
    {
        while (Dequeue() is { } node)
        {
            node.SetError(error);
            completions.Add(node);
        }
    }

    /// <summary>Unlinks every waiter, recording <paramref name="result"/> as each one's outcome, into <paramref name="completions"/>.</summary>
    public void DrainWithResult(T result, ref Completions<T> completions)
    {
        while (Dequeue() is { } node)
        {
            node.SetResult(result);
            completions.Add(node);
        }
    }

    /// <summary>
    /// Called by a node's cancellation or timeout callback, outside the lock: if the node is still waiting, it
    /// leaves the queue holding nothing and fails with <paramref name="error"/>; if it was already served, nothing
    /// happens (it keeps what it was given).
    /// </summary>
    internal void Abandon(WaitNode<T> node, Exception error)
    {
        var completions = default(Completions<T>);
        lock (_sync)
        {
            if (!node.IsQueued)
            {
                return;
            }

            Unlink(node);
            node.SetError(error);
            completions.Add(node);
            _owner?.OnWaiterLeft(ref completions);
        }

        completions.CompleteAll();
    }

    /// <summary>Takes back a node whose outcome the awaiter has observed.</summary>
    internal void Return(WaitNode<T> node)
    {
        Debug.Assert(!node.IsQueued, "a queued node cannot be recycled");
        node.Previous = null;
        node.Next = null;
        if (Volatile.Read(ref _cached) is null)
        {
            Volatile.Write(ref _cached, node);
            return;
        }

        lock (_sync)
        {
            if (_pooled < MaxPooled - 1) // the cached slot is the last of MaxPooled
            {
                node.Next = _pool;
                _pool = node;
                _pooled++;
            }
        }
    }

    private void Unlink(WaitNode<T> node)
    {
        AssertLockHeld();
        Debug.Assert(node.IsQueued, "only a linked node can be unlinked");
        WaitNode<T>? previous = node.Previous;
        WaitNode<T>? next = node.Next;
        if (previous is null)
        {
            _head = next;
        }
        else
        {
            previous.Next = next;
        }

        if (next is null)
        {
            _tail = previous;
        }
        else
        {
            next.Previous = previous;
        }

        node.Previous = null;
        node.Next = null;
        node.IsQueued = false;
        _count--;
    }

    [Conditional("DEBUG")]
    private void AssertLockHeld() => Debug.Assert(_sync.IsHeldByCurrentThread, "the owner's lock must be held");
}

/// <summary>
/// Implemented by a primitive whose policy must react when a waiter gives up (times out or is cancelled).
/// </summary>
internal interface IWaitOwner<T>
{
    /// <summary>
    /// Called under the lock right after a waiter left the queue by cancellation or timeout. Grants to whoever the
    /// departure unblocked go into <paramref name="completions"/>, which the engine completes after the lock.
    /// </summary>
    void OnWaiterLeft(ref Completions<T> completions);
}

/// <summary>
/// Waiters whose outcomes were decided under the lock, to be completed after leaving it (so continuations and
/// synchronization contexts never run under the lock). A chain through <see cref="WaitNode{T}.Next"/>.
/// </summary>
internal struct Completions<T>
{
    private WaitNode<T>? _head;
    private WaitNode<T>? _tail;

    public readonly bool IsEmpty => _head is null;

    /// <summary>Adds an unlinked node whose outcome is recorded.</summary>
    public void Add(WaitNode<T> node)
    {
        Debug.Assert(!node.IsQueued, "only unlinked nodes can be completed");
        node.Next = null;
        if (_tail is null)
        {
            _head = node;
        }
        else
        {
            _tail.Next = node;
        }

        _tail = node;
    }

    /// <summary>Delivers every outcome, oldest first. Call outside the lock.</summary>
    public void CompleteAll()
    {
        WaitNode<T>? node = _head;
        _head = _tail = null;
        while (node is not null)
        {
            // Read the link first: once completed, the node may be recycled and relinked by its awaiter at once.
            WaitNode<T>? next = node.Next;
            node.Next = null;
            node.Complete();
            node = next;
        }
    }
}
