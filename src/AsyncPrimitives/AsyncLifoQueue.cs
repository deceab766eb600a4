using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A last-in, first-out queue (a stack) for asynchronous producers and consumers, with an optional bound,
/// <see cref="AsyncQueueBase{T}.TaskDone"/>/<see cref="AsyncQueueBase{T}.JoinAsync(CancellationToken)"/> and shutdown
/// (Toro's <c>LifoQueue</c>, <c>tornado.queues.LifoQueue</c>, <c>asyncio.LifoQueue</c>).
/// </summary>
/// <typeparam name="T">The type of the items.</typeparam>
/// <remarks>
/// <para>The item that entered last leaves first. Getters and putters still wait in FIFO order.</para>
/// <para>A get that lets waiting putters in (with the default <see cref="AsyncQueueBase{T}.ResumeSize"/>, any get on a
/// full queue with putters waiting) first moves the oldest waiting putter's item in, so that item is the one taken: a
/// full queue holding 1 then 0, with puts of 3 then 2 waiting, gives 3, 2, 0, 1.</para>
/// <para>Fairness, timeouts, cancellation (nothing is lost), shutdown and continuations are described on
/// <see cref="AsyncQueueBase{T}"/>.</para>
/// </remarks>
/// <example>
/// <code>
/// var stack = new AsyncLifoQueue&lt;int&gt;();
/// await stack.PutAsync(1);
/// await stack.PutAsync(2);
/// int newest = await stack.GetAsync(); // 2
/// </code>
/// </example>
public sealed class AsyncLifoQueue<T> : AsyncQueueBase<T>
{
    /// <summary>Creates a LIFO queue.</summary>
    /// <param name="maxSize">The most items the queue holds before puts wait; 0 (the default) means unbounded.</param>
    /// <param name="timeProvider">The clock for timeouts; <see cref="TimeProvider.System"/> when null.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxSize"/> is negative.</exception>
    public AsyncLifoQueue(int maxSize = 0, TimeProvider? timeProvider = null)
        : base("AsyncLifoQueue", maxSize, new LifoStore<T>(CheckMaxSize(maxSize)), timeProvider)
    {
    }
}
