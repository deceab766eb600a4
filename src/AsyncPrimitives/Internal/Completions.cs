using System.Diagnostics;
using System.Runtime.ExceptionServices;

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

    /// <summary>
    /// Delivers every outcome, oldest first. Call outside the lock.
    /// </summary>
    /// <remarks>
    /// A lone waiter's pool continuation goes to the current thread's local queue, as a plain <c>await</c>'s does: the
    /// hand-off runs next on the thread that made it. Several waiters served at once (readers admitted together, an
    /// event set, a broadcast, a shutdown) go to the pool's global queue instead, oldest first, where every pool thread
    /// takes them in that order behind the work queued before them. On the local queue the releasing thread would run
    /// them newest first and ahead of everything in the global queue, such as the continuations of the callers that
    /// still hold the primitive; in the contended reader-writer benchmark that made acquires wait about twice as often.
    /// </remarks>
    public void CompleteAll()
    {
        WaitNode<T>? node = _head;
        bool preferLocal = ReferenceEquals(_head, _tail);
        _head = _tail = null;
        Exception? failure = null;
        while (node is not null)
        {
            // Read the link first: once completed, the node may be recycled and relinked by its awaiter at once.
            WaitNode<T>? next = node.Next;
            node.Next = null;
            try
            {
                node.Complete(preferLocal);
            }
#pragma warning disable CA1031 // Rethrown below, once every waiter has its outcome.
            catch (Exception e)
#pragma warning restore CA1031
            {
                // Only a metrics listener's callback can throw here, after its waiter had its outcome: the others
                // still get theirs.
                failure ??= e;
            }

            node = next;
        }

        if (failure is not null)
        {
            ExceptionDispatchInfo.Capture(failure).Throw();
        }
    }
}
