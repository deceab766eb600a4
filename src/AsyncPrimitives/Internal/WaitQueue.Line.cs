using System.Diagnostics;

namespace AsyncPrimitives.Internal;

/// <content>
/// The line itself: an intrusive, doubly linked FIFO of nodes (unlinking from anywhere is O(1)), and the pool their
/// nodes are rented from and recycled into. Where a waiter is queued (<see cref="Link"/>), leaves the line
/// (<see cref="Unlink"/>) and is recycled (<see cref="IWaitQueue{T}.Return"/>).
/// </content>
internal sealed partial class WaitQueue<T, TPolicy>
{
    /// <summary>Oldest waiter: the next to be served. Null when the queue is empty.</summary>
    private WaitNode<T>? _head;

    /// <summary>Newest waiter. Null when the queue is empty.</summary>
    private WaitNode<T>? _tail;

    /// <summary>Number of linked waiters. Written under the lock.</summary>
    private int _count;

    /// <summary>Free list of recycled nodes, linked through <see cref="WaitNode{T}.Next"/>. Guarded by the lock.</summary>
    private WaitNode<T>? _pool;

    /// <summary>Number of nodes in <see cref="_pool"/>.</summary>
    private int _pooled;

    /// <summary>
    /// One recycled node kept outside the lock: an awaiter returns its node here with a plain write, so the common
    /// contended cycle (wait, get granted, wait again) does not take the lock a third time just to recycle. Only
    /// <see cref="Rent"/> (under the lock) takes from it, and <see cref="IWaitQueue{T}.Return"/> only fills it when
    /// empty, so a race between them can at worst overwrite a node, which the GC then collects: never hand one node out twice.
    /// </summary>
    private WaitNode<T>? _cached;

    /// <summary>The number of waiters in the line (a snapshot when read without the lock).</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>True when nobody waits. Lock held.</summary>
    public bool IsEmpty => _head is null;

    /// <summary>The oldest waiter, or null. Lock held.</summary>
    public WaitNode<T>? Head => _head;

    /// <summary>Unlinks and returns the oldest waiter, or null. Lock held; decide its outcome with <see cref="Serve"/> or <see cref="Fail"/>.</summary>
    public WaitNode<T>? Dequeue()
    {
        WaitNode<T>? node = _head;
        if (node is not null)
        {
            Unlink(node);
        }

        return node;
    }

    void IWaitQueue<T>.Return(WaitNode<T> node)
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
            if (_pooled < WaitLines.PoolCapacity - 1) // the cached slot is the last one
            {
                node.Next = _pool;
                _pool = node;
                _pooled++;
            }
        }
    }

    WaitLineSnapshot IWaitLine.Snapshot()
    {
        lock (_sync)
        {
            var linked = new List<object>(_count);
            for (WaitNode<T>? node = _head; node is not null; node = node.Next)
            {
                linked.Add(node);
            }

            return new WaitLineSnapshot(linked, _pooled + (Volatile.Read(ref _cached) is null ? 0 : 1));
        }
    }

    /// <summary>A clean node for a new wait: the cached one, a pooled one, or a new one. Lock held.</summary>
    private WaitNode<T> Rent()
    {
        AssertLockHeld();
        WaitNode<T>? node = Volatile.Read(ref _cached);
        if (node is not null)
        {
            Volatile.Write(ref _cached, null);
            return node;
        }

        node = _pool;
        if (node is null)
        {
            return new WaitNode<T>(this);
        }

        _pool = node.Next;
        _pooled--;
        return node;
    }

    /// <summary>Appends a waiter to the tail: a wait starts. Lock held.</summary>
    private void Link(WaitNode<T> node)
    {
        AssertLockHeld();
        Debug.Assert(!node.IsQueued, "a node waits in one line at a time");
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
        node.Queue = this;
        _count++;
    }

    /// <summary>Takes a waiter out of the line, wherever it is: its wait ends, with the outcome its caller records next. Lock held.</summary>
    private void Unlink(WaitNode<T> node)
    {
        AssertLockHeld();
        Debug.Assert(ReferenceEquals(node.Queue, this), "only a node linked here can be unlinked here");
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
        node.Queue = null;
        _count--;
    }

    [Conditional("DEBUG")]
    private void AssertLockHeld() => Debug.Assert(_sync.IsHeldByCurrentThread, "the owner's lock must be held");
}
