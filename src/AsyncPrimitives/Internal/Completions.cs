using System.Diagnostics;

namespace AsyncPrimitives.Internal;

/// <summary>
/// Waiters whose outcomes were decided under a lock, to be completed after leaving it (so continuations and
/// synchronization contexts never run under the lock). A chain through <see cref="WaitNode{T}.Next"/>.
/// </summary>
internal struct Completions<T>
{
    private WaitNode<T>? _head;
    private WaitNode<T>? _tail;

    /// <summary>Adds an unlinked node whose outcome is recorded.</summary>
    public void Add(WaitNode<T> node)
    {
        Debug.Assert(!node.IsQueued, "only unlinked nodes can be completed");
        node.Next = null;
        (_tail is null ? ref _head : ref _tail.Next) = node;
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
