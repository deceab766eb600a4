using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A priority queue for asynchronous producers and consumers that gives the smallest item first, with an optional
/// bound, <see cref="AsyncQueueBase{T}.TaskDone"/>/<see cref="AsyncQueueBase{T}.JoinAsync(CancellationToken)"/> and
/// shutdown (Toro's <c>PriorityQueue</c>, <c>tornado.queues.PriorityQueue</c>, <c>asyncio.PriorityQueue</c>).
/// </summary>
/// <typeparam name="T">The type of the items.</typeparam>
/// <remarks>
/// <para>Items leave smallest first by the comparer; equal items leave in the order they entered (the order is
/// stable). Value tuples such as <c>(int Priority, string Payload)</c> compare element by element, as Python's tuples
/// do. Getters and putters still wait in FIFO order.</para>
/// <para>The comparer runs under the queue's lock: it must be fast and must not use the queue. If it throws, the
/// exception reaches the caller of the put or get and the queue is unchanged.</para>
/// <para>A get that lets waiting putters in (with the default <see cref="AsyncQueueBase{T}.ResumeSize"/>, any get on a
/// full queue with putters waiting) first moves the oldest waiting putter's item in, so it competes by priority with
/// the items already queued.</para>
/// <para>Fairness, timeouts, cancellation (nothing is lost), shutdown and continuations are described on
/// <see cref="AsyncQueueBase{T}"/>.</para>
/// </remarks>
/// <example>
/// <code>
/// var queue = new AsyncPriorityQueue&lt;(int Priority, string Name)&gt;();
/// await queue.PutAsync((1, "medium"));
/// await queue.PutAsync((0, "high"));
/// await queue.PutAsync((10, "low"));
/// var first = await queue.GetAsync(); // (0, "high")
/// </code>
/// </example>
public sealed class AsyncPriorityQueue<T> : AsyncQueueBase<T>
{
    /// <summary>Creates a priority queue.</summary>
    /// <param name="maxSize">The most items the queue holds before puts wait; 0 (the default) means unbounded.</param>
    /// <param name="comparer">Orders the items, smallest first; <see cref="Comparer{T}.Default"/> when null.</param>
    /// <param name="timeProvider">The clock for timeouts; <see cref="TimeProvider.System"/> when null.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxSize"/> is negative.</exception>
    public AsyncPriorityQueue(int maxSize = 0, IComparer<T>? comparer = null, TimeProvider? timeProvider = null)
        : base("AsyncPriorityQueue", maxSize, new PriorityStore<T>(CheckMaxSize(maxSize), comparer ??= Comparer<T>.Default), timeProvider)
    {
        Comparer = comparer;
    }

    /// <summary>The comparer that orders the items.</summary>
    public IComparer<T> Comparer { get; }
}
