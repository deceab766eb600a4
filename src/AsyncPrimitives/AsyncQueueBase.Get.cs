using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <content>Getting items: a get takes the next item (first moving a waiting putter's item in), or waits while the queue is empty.</content>
public abstract partial class AsyncQueueBase<T>
{
    /// <summary>Takes the next item in the queue's order, waiting in FIFO order while the queue is empty. A get that lets
    /// waiting putters in (with the default <see cref="ResumeSize"/>, any get on a full queue with putters waiting) first
    /// moves the oldest one's item in (completing that put).</summary>
    /// <param name="cancellationToken">Cancels the wait; nothing is taken.</param>
    /// <returns>The item.</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down and empty.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before an item
    /// was taken; nothing was taken.</exception>
    public ValueTask<T> GetAsync(CancellationToken cancellationToken = default) =>
        _getters.WaitAsync(new GetPolicy(this), default!, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Takes the next item in the queue's order, waiting in FIFO order at most <paramref name="timeout"/> while
    /// the queue is empty. A get that lets waiting putters in (with the default <see cref="ResumeSize"/>, any get on a
    /// full queue with putters waiting) first moves the oldest one's item in.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit,
    /// <see cref="TimeSpan.Zero"/> to take one now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait; nothing is taken.</param>
    /// <returns>The item.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or
    /// longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The queue stayed empty for <paramref name="timeout"/>; nothing was taken.</exception>
    /// <exception cref="QueueShutDownException">The queue is shut down and empty.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before an item
    /// was taken; nothing was taken.</exception>
    public ValueTask<T> GetAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return _getters.WaitAsync(new GetPolicy(this), default!, timeout, cancellationToken);
    }

    /// <summary>Takes the next item if there is one (moving a waiting putter's item in first when this get lets putters
    /// in, as <see cref="GetAsync(CancellationToken)"/> does). Never waits.</summary>
    /// <param name="item">The item taken, or the default value.</param>
    /// <returns>True if an item was taken; false if the queue is empty.</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down and empty.</exception>
    public bool TryGet([MaybeNullWhen(false)] out T item)
    {
        if (_getters.TryNow(new GetPolicy(this), default!, out item, out Exception? refusal))
        {
            return true;
        }

        return refusal is null ? false : throw refusal;
    }

    /// <summary>
    /// Takes the next item. If putters wait (so the queue was full) and this take leaves at most
    /// <see cref="ResumeSize"/> items, their items move in first, oldest first, until the queue would be full again
    /// after the take; then the next item is taken in this queue's order, as Toro did (with the default
    /// <see cref="ResumeSize"/> that is one putter per take). Those puts complete with <paramref name="completions"/>,
    /// after the lock. Lock held; the queue or the putters are not empty.
    /// </summary>
    private T TakeLocked(ref Completions<T> completions)
    {
        Debug.Assert(_sync.IsHeldByCurrentThread, "the lock must be held");
        if (_putters.IsEmpty || _store.Count - 1 > _resumeSize)
        {
            return _store.Take();
        }

        // The putters are served only once the take has succeeded: if a priority comparer throws, in an add or in
        // the take, the items moved in are taken out again and nothing has changed.
        int movedIn = 0;
        T item;
        try
        {
            for (WaitNode<T>? putter = _putters.Head; putter is not null && _store.Count <= _maxSize; putter = putter.Next)
            {
                _store.Add(putter.Value);
                movedIn++;
            }

            item = _store.Take();
        }
        catch
        {
            for (; movedIn > 0; movedIn--)
            {
                _store.UndoAdd();
            }

            throw;
        }

        for (; movedIn > 0; movedIn--)
        {
            WaitNode<T> putter = _putters.Dequeue()!;
            _unfinished++;
            _putters.Serve(putter, default!, ref completions);
        }

        return item;
    }

    /// <summary>The engine's view of a get: served when an item is there (or a putter's can move in); refused once
    /// shut down and empty.</summary>
    private readonly struct GetPolicy(AsyncQueueBase<T> queue) : IWaitPolicy<T>
    {
        public bool HasLockFreePath => false;

        public bool TryAcquire(T offer, bool willWait, ref Completions<T> completions, out T result)
        {
            bool available = queue._store.Count > 0 || !queue._putters.IsEmpty;
            result = available ? queue.TakeLocked(ref completions) : default!;
            return available;
        }

        public Exception? Refusal() => RefuseIfShutDown(queue);

        public void OnWaiterLeft(ref Completions<T> completions)
        {
        }
    }
}
