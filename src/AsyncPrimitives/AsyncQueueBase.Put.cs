using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <content>Putting items: a put hands its item to the oldest waiting getter, or stores it, or waits while the queue is full
/// (or while earlier putters wait, below <see cref="AsyncQueueBase{T}.ResumeSize"/>).</content>
public abstract partial class AsyncQueueBase<T>
{
    /// <summary>Puts an item, waiting in FIFO order while the queue is full or earlier putters wait (they wait until a get
    /// leaves <see cref="Count"/> at or below <see cref="ResumeSize"/>, so the queue may then be below <see cref="MaxSize"/>).</summary>
    /// <param name="item">The item.</param>
    /// <param name="cancellationToken">Cancels the wait; the item is then not enqueued.</param>
    /// <returns>A task that completes when the item is in the queue or handed to a getter.</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down, or was shut down while the put waited; the
    /// item was not enqueued.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the item
    /// entered the queue; the item was not enqueued.</exception>
    public ValueTask PutAsync(T item, CancellationToken cancellationToken = default) =>
        _putters.WaitWithoutResultAsync(new PutPolicy(this), item, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Puts an item, waiting in FIFO order at most <paramref name="timeout"/> while the queue is full or earlier
    /// putters wait (see <see cref="PutAsync(T, CancellationToken)"/>).</summary>
    /// <param name="item">The item.</param>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit,
    /// <see cref="TimeSpan.Zero"/> to put now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait; the item is then not enqueued.</param>
    /// <returns>A task that completes when the item is in the queue or handed to a getter.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or
    /// longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The put was not let in within <paramref name="timeout"/>; the item was not enqueued.</exception>
    /// <exception cref="QueueShutDownException">The queue is shut down, or was shut down while the put waited; the
    /// item was not enqueued.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the item
    /// entered the queue; the item was not enqueued.</exception>
    public ValueTask PutAsync(T item, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return _putters.WaitWithoutResultAsync(new PutPolicy(this), item, timeout, cancellationToken);
    }

    /// <summary>Puts an item if that needs no wait: a getter is waiting, or the queue is not full and no putter waits.
    /// Never waits.</summary>
    /// <param name="item">The item.</param>
    /// <returns>True if the item entered the queue (or went to a waiting getter); false if the queue is full or putters
    /// wait (the queue may then be below <see cref="MaxSize"/>: see <see cref="ResumeSize"/>).</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down.</exception>
    public bool TryPut(T item)
    {
        if (_putters.TryNow(new PutPolicy(this), item, out _, out Exception? refusal))
        {
            return true;
        }

        return refusal is null ? false : throw refusal;
    }

    /// <summary>The engine's view of a put: served when a getter waits or there is room; refused once shut down.</summary>
    private readonly struct PutPolicy(AsyncQueueBase<T> queue) : IWaitPolicy<T>
    {
        public bool HasLockFreePath => false;

        public bool TryAcquire(T offer, bool willWait, ref Completions<T> completions, out T result)
        {
            result = default!;
            if (queue._isShutDown)
            {
                return false;
            }

            if (queue._getters.Dequeue() is { } getter)
            {
                // Getters wait only on an empty queue, so the item goes straight to the oldest one.
                queue._getters.Serve(getter, offer, ref completions);
            }
            else if (!queue.IsFullLocked)
            {
                queue._store.Add(offer);
            }
            else
            {
                return false;
            }

            queue._unfinished++;
            return true;
        }

        public Exception? Refusal() => RefuseIfShutDown(queue);

        public void OnWaiterLeft(ref Completions<T> completions)
        {
        }
    }
}
