using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A first-in, first-out queue for asynchronous producers and consumers, with an optional bound,
/// <see cref="AsyncQueueBase{T}.TaskDone"/>/<see cref="AsyncQueueBase{T}.JoinAsync(CancellationToken)"/> and shutdown
/// (Toro's <c>Queue</c>, <c>tornado.queues.Queue</c>, <c>asyncio.Queue</c>).
/// </summary>
/// <typeparam name="T">The type of the items.</typeparam>
/// <remarks>
/// Items leave in the order they entered. Fairness, timeouts, cancellation (nothing is lost), shutdown and
/// continuations are described on <see cref="AsyncQueueBase{T}"/>.
/// </remarks>
/// <example>
/// <code>
/// var queue = new AsyncQueue&lt;string&gt;(maxSize: 100);
/// await queue.PutAsync("job", TimeSpan.FromSeconds(5), cancellationToken); // TimeoutException if full for 5 s
/// string job = await queue.GetAsync(cancellationToken);
/// queue.TaskDone();
/// </code>
/// </example>
public sealed class AsyncQueue<T> : AsyncQueueBase<T>
{
    /// <summary>Creates a FIFO queue.</summary>
    /// <param name="maxSize">The most items the queue holds before puts wait; 0 (the default) means unbounded.</param>
    /// <param name="timeProvider">The clock for timeouts; <see cref="TimeProvider.System"/> when null.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxSize"/> is negative.</exception>
    public AsyncQueue(int maxSize = 0, TimeProvider? timeProvider = null)
        : base("AsyncQueue", maxSize, new FifoStore<T>(CheckMaxSize(maxSize)), timeProvider)
    {
    }
}
