using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// The members shared by <see cref="AsyncQueue{T}"/> (FIFO), <see cref="AsyncLifoQueue{T}"/> (LIFO) and
/// <see cref="AsyncPriorityQueue{T}"/> (smallest first): a coroutine-style producer/consumer queue with an optional
/// bound, <c>TaskDone</c>/<c>Join</c> accounting and Python 3.13 shutdown (Toro's <c>Queue</c>,
/// <c>tornado.queues.Queue</c>, <c>asyncio.Queue</c>). Only the three queue types derive from it.
/// </summary>
/// <typeparam name="T">The type of the items.</typeparam>
/// <remarks>
/// <para><b>Fairness.</b> Waiting getters and waiting putters are each served strictly first-come, first-served.
/// A put hands its item straight to the oldest waiting getter; a newcomer never barges past a waiter, not even
/// through <see cref="TryPut(T)"/> or <see cref="TryGet(out T)"/>.</para>
/// <para><b>Waiting putters move in first.</b> When the queue is full, a put waits carrying its item. A get first
/// moves the oldest waiting putter's item into the queue (that put completes, and the item counts in
/// <see cref="UnfinishedTasks"/>), and only then takes the next item in the queue's order. So a LIFO or priority
/// queue orders the waiting putter's item with the rest, as Toro did: a full <see cref="AsyncLifoQueue{T}"/> holding
/// 1 then 0, with puts of 3 then 2 waiting, gives 3, 2, 0, 1.</para>
/// <para><b>Timeouts and cancellation.</b> Every wait has a <see cref="CancellationToken"/> form and a
/// <see cref="TimeSpan"/> form: <see cref="Timeout.InfiniteTimeSpan"/> waits without limit, <see cref="TimeSpan.Zero"/>
/// succeeds now or throws <see cref="TimeoutException"/> now. An expired wait throws <see cref="TimeoutException"/>,
/// a cancelled one <see cref="OperationCanceledException"/>; a token that is already cancelled cancels the call at
/// once, even if it could succeed. <b>Nothing is lost</b>: a put that times out or is cancelled did not enqueue its
/// item; a get that times out or is cancelled took nothing, and the next getter gets the item. If an item is handed to
/// a getter at the very moment its token is cancelled, exactly one side wins: the get returns the item, or it
/// throws and the item goes to the next getter or stays queued.</para>
/// <para><b>Shutdown</b> (Python 3.13). After <see cref="Shutdown(bool)"/> every put, waiting or new, throws
/// <see cref="QueueShutDownException"/>; gets take what is left, then throw it (waiting getters fail with it at once,
/// since they only wait when the queue is empty). <c>Shutdown(immediate: true)</c> also drops the remaining items,
/// counting each as done, which may complete <see cref="JoinAsync(CancellationToken)"/>.</para>
/// <para><b>Continuations</b> never run inline: a put, get, <see cref="TaskDone"/> or <see cref="Shutdown(bool)"/>
/// decides every outcome under the queue's lock and completes the waiters after leaving it; they resume
/// asynchronously. Uncontended puts and gets allocate nothing.</para>
/// <para>Every member is thread-safe. Counts and flags are snapshots.</para>
/// </remarks>
/// <example>
/// <code>
/// var queue = new AsyncQueue&lt;int&gt;(maxSize: 2);
/// var consumer = Task.Run(async () =>
/// {
///     await foreach (int item in queue)   // ends when the queue is shut down and empty
///     {
///         Process(item);
///         queue.TaskDone();
///     }
/// });
/// for (int i = 0; i &lt; 10; i++)
/// {
///     await queue.PutAsync(i);            // waits while the queue is full
/// }
/// await queue.JoinAsync();                // every item processed
/// queue.Shutdown();
/// await consumer;
/// </code>
/// </example>
[DebuggerDisplay("Count = {Count}, MaxSize = {MaxSize}, UnfinishedTasks = {UnfinishedTasks}, IsShutDown = {IsShutDown}")]
public abstract partial class AsyncQueueBase<T> : IAsyncEnumerable<T>
{
    /// <summary>Guards every field below and the three wait queues.</summary>
    private readonly Lock _sync = new();

    /// <summary>The items in the queue, in this queue's order. Holds more than <see cref="_maxSize"/> only for the
    /// instant between a get moving a putter's item in and taking one.</summary>
    private readonly QueueStore<T> _store;

    /// <summary>FIFO of blocked getters. Non-empty only while <see cref="_store"/> is empty and nobody waits to put.</summary>
    private readonly WaitQueue<T> _getters;

    /// <summary>FIFO of blocked putters, each carrying its item in <see cref="WaitNode{T}.Payload"/> (not yet in the
    /// queue, not counted). Non-empty only while the queue is full and not shut down.</summary>
    private readonly WaitQueue<T> _putters;

    /// <summary>FIFO of <see cref="JoinAsync(CancellationToken)"/> callers. Non-empty only while <see cref="_unfinished"/> &gt; 0.</summary>
    private readonly WaitQueue<T> _joiners;

    /// <summary>The bound; 0 means unbounded.</summary>
    private readonly int _maxSize;

    /// <summary>The type's name for <see cref="ToString"/>.</summary>
    private readonly string _name;

    /// <summary>Items that entered the queue (stored or handed to a getter) minus <see cref="TaskDone"/> calls; never negative.</summary>
    private int _unfinished;

    /// <summary>Set once by <see cref="Shutdown(bool)"/>; never cleared.</summary>
    private bool _isShutDown;

    private protected AsyncQueueBase(string name, int maxSize, QueueStore<T> store, TimeProvider? timeProvider)
    {
        Debug.Assert(maxSize >= 0, "derived constructors validate maxSize with CheckMaxSize");
        TimeProvider time = timeProvider ?? TimeProvider.System;
        _name = name;
        _maxSize = maxSize;
        _store = store;
        _getters = new WaitQueue<T>(_sync, time);
        _putters = new WaitQueue<T>(_sync, time);
        _joiners = new WaitQueue<T>(_sync, time);
    }

    /// <summary>What a non-waiting take found.</summary>
    private enum TakeStatus
    {
        Taken,
        Empty,
        ShutDown,
    }

    /// <summary>The most items the queue holds; 0 means unbounded.</summary>
    public int MaxSize => _maxSize;

    /// <summary>The number of items in the queue (a snapshot). Items of waiting putters are not counted.</summary>
    public int Count
    {
        get
        {
            lock (_sync)
            {
                return _store.Count;
            }
        }
    }

    /// <summary>Whether the queue holds no items (a snapshot).</summary>
    public bool IsEmpty => Count == 0;

    /// <summary>Whether the queue holds <see cref="MaxSize"/> items, so a put would wait (a snapshot). Never true
    /// for an unbounded queue.</summary>
    public bool IsFull
    {
        get
        {
            lock (_sync)
            {
                return IsFullLocked;
            }
        }
    }

    /// <summary>
    /// The number of items that entered the queue and have not been marked done with <see cref="TaskDone"/>
    /// (a snapshot). It grows when an item enters the queue (including an item handed straight to a waiting getter,
    /// and a waiting putter's item when it moves in), not when a put starts waiting.
    /// </summary>
    public int UnfinishedTasks
    {
        get
        {
            lock (_sync)
            {
                return _unfinished;
            }
        }
    }

    /// <summary>Whether <see cref="Shutdown(bool)"/> has been called.</summary>
    public bool IsShutDown
    {
        get
        {
            lock (_sync)
            {
                return _isShutDown;
            }
        }
    }

    /// <summary>The number of blocked getters (a snapshot).</summary>
    internal int GetterCount
    {
        get
        {
            lock (_sync)
            {
                return _getters.Count;
            }
        }
    }

    /// <summary>The number of blocked putters (a snapshot).</summary>
    internal int PutterCount
    {
        get
        {
            lock (_sync)
            {
                return _putters.Count;
            }
        }
    }

    /// <summary>Validates a derived constructor's <paramref name="maxSize"/> before its store is sized from it.</summary>
    private protected static int CheckMaxSize(int maxSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxSize);
        return maxSize;
    }

    private bool IsFullLocked => _maxSize != 0 && _store.Count >= _maxSize;

    /// <summary>Puts an item, waiting in FIFO order while the queue is full.</summary>
    /// <param name="item">The item.</param>
    /// <param name="cancellationToken">Cancels the wait; the item is then not enqueued.</param>
    /// <returns>A task that completes when the item is in the queue or handed to a getter.</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down, or was shut down while the put waited; the
    /// item was not enqueued.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the item
    /// entered the queue; the item was not enqueued.</exception>
    public ValueTask PutAsync(T item, CancellationToken cancellationToken = default) =>
        PutCore(item, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Puts an item, waiting in FIFO order at most <paramref name="timeout"/> while the queue is full.</summary>
    /// <param name="item">The item.</param>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit,
    /// <see cref="TimeSpan.Zero"/> to put now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait; the item is then not enqueued.</param>
    /// <returns>A task that completes when the item is in the queue or handed to a getter.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or
    /// longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The queue stayed full for <paramref name="timeout"/>; the item was not enqueued.</exception>
    /// <exception cref="QueueShutDownException">The queue is shut down, or was shut down while the put waited; the
    /// item was not enqueued.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the item
    /// entered the queue; the item was not enqueued.</exception>
    public ValueTask PutAsync(T item, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowHelper.ValidateTimeout(timeout);
        return PutCore(item, timeout, cancellationToken);
    }

    /// <summary>Puts an item if that needs no wait: the queue is not full (or a getter is waiting). Never waits.</summary>
    /// <param name="item">The item.</param>
    /// <returns>True if the item entered the queue (or went to a waiting getter); false if the queue is full.</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down.</exception>
    public bool TryPut(T item)
    {
        WaitNode<T>? getter;
        lock (_sync)
        {
            if (_isShutDown)
            {
                ThrowShutDown();
            }

            getter = _getters.Dequeue();
            if (getter is null)
            {
                if (IsFullLocked)
                {
                    return false;
                }

                _store.Add(item);
                _unfinished++;
                return true;
            }

            getter.SetResult(item);
            _unfinished++;
        }

        getter.Complete(); // outside the lock: the getter resumes asynchronously anyway, but never under our lock
        return true;
    }

    /// <summary>Takes the next item in the queue's order, waiting in FIFO order while the queue is empty. If putters
    /// wait on a full queue, the oldest one's item moves in first (completing that put).</summary>
    /// <param name="cancellationToken">Cancels the wait; nothing is taken.</param>
    /// <returns>The item.</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down and empty.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before an item
    /// was taken; nothing was taken.</exception>
    public ValueTask<T> GetAsync(CancellationToken cancellationToken = default) =>
        GetCore(Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Takes the next item in the queue's order, waiting in FIFO order at most <paramref name="timeout"/> while
    /// the queue is empty. If putters wait on a full queue, the oldest one's item moves in first.</summary>
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
        ThrowHelper.ValidateTimeout(timeout);
        return GetCore(timeout, cancellationToken);
    }

    /// <summary>Takes the next item if there is one (moving a waiting putter's item in first). Never waits.</summary>
    /// <param name="item">The item taken, or the default value.</param>
    /// <returns>True if an item was taken; false if the queue is empty.</returns>
    /// <exception cref="QueueShutDownException">The queue is shut down and empty.</exception>
    public bool TryGet([MaybeNullWhen(false)] out T item)
    {
        TakeStatus status = TryTake(out item);
        if (status == TakeStatus.ShutDown)
        {
            ThrowShutDown();
        }

        return status == TakeStatus.Taken;
    }

    /// <summary>
    /// Marks one item that entered the queue as processed (Python's <c>task_done</c>). When every item is done,
    /// <see cref="JoinAsync(CancellationToken)"/> completes.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called more times than items entered the queue.</exception>
    public void TaskDone()
    {
        var completions = default(Completions<T>);
        lock (_sync)
        {
            if (_unfinished == 0)
            {
                ThrowTaskDoneTooMany();
            }

            if (--_unfinished == 0)
            {
                _joiners.DrainWithResult(default!, ref completions);
            }
        }

        completions.CompleteAll();
    }

    /// <summary>Waits until every item that entered the queue has been marked done with <see cref="TaskDone"/>.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when <see cref="UnfinishedTasks"/> reaches zero; already completed if it is zero.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first.</exception>
    public ValueTask JoinAsync(CancellationToken cancellationToken = default) =>
        JoinCore(Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Waits at most <paramref name="timeout"/> until every item that entered the queue has been marked done.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit,
    /// <see cref="TimeSpan.Zero"/> to check now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when <see cref="UnfinishedTasks"/> reaches zero; already completed if it is zero.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or
    /// longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">Tasks were still unfinished after <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first.</exception>
    public ValueTask JoinAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowHelper.ValidateTimeout(timeout);
        return JoinCore(timeout, cancellationToken);
    }

    /// <summary>
    /// Shuts the queue down (Python 3.13's <c>Queue.shutdown</c>): every later or waiting put throws
    /// <see cref="QueueShutDownException"/>; gets take what is left, then throw it. Calling it again is harmless,
    /// and <c>Shutdown(immediate: true)</c> after <c>Shutdown()</c> still drops what is left.
    /// </summary>
    /// <param name="immediate">Also drop the items still in the queue, counting each as done (as if
    /// <see cref="TaskDone"/> were called for it, which may complete <see cref="JoinAsync(CancellationToken)"/>), so
    /// waiting and later gets throw at once.</param>
    public void Shutdown(bool immediate = false)
    {
        var completions = default(Completions<T>);
        lock (_sync)
        {
            _isShutDown = true;
            if (immediate && _store.Count > 0)
            {
                int dropped = _store.Clear();
                _unfinished = Math.Max(0, _unfinished - dropped);
                if (_unfinished == 0)
                {
                    _joiners.DrainWithResult(default!, ref completions);
                }
            }

            if (!_putters.IsEmpty)
            {
                _putters.DrainWithError(new QueueShutDownException(), ref completions);
            }

            // Getters wait only while the queue is empty, so every one of them fails now.
            if (!_getters.IsEmpty)
            {
                Debug.Assert(_store.Count == 0, "getters wait only on an empty queue");
                _getters.DrainWithError(new QueueShutDownException(), ref completions);
            }
        }

        completions.CompleteAll();
    }

    /// <summary>
    /// Returns an enumerator that takes items with <see cref="GetAsync(CancellationToken)"/> until the queue is shut
    /// down and empty, then ends (it does not throw <see cref="QueueShutDownException"/>). It does not call
    /// <see cref="TaskDone"/>: call it for each item once processed if you use <see cref="JoinAsync(CancellationToken)"/>.
    /// Several enumerators may consume one queue concurrently; each item goes to exactly one of them.
    /// </summary>
    /// <param name="cancellationToken">Cancels a waiting <c>MoveNextAsync</c>, which then throws
    /// <see cref="OperationCanceledException"/>; nothing is taken.</param>
    /// <returns>The enumerator.</returns>
    public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken cancellationToken = default) =>
        new Enumerator(this, cancellationToken);

    /// <summary>
    /// Describes the state like Toro's <c>__str__</c>:
    /// <c>AsyncQueue(maxSize=10, count=3, getters=0, putters=0, unfinished=3)</c>; an unbounded queue shows
    /// <c>maxSize=unbounded</c>, and a shut-down queue ends with <c>, shutdown</c>.
    /// </summary>
    /// <returns>The description.</returns>
    public override string ToString()
    {
        int count, getters, putters, unfinished;
        bool shutDown;
        lock (_sync)
        {
            count = _store.Count;
            getters = _getters.Count;
            putters = _putters.Count;
            unfinished = _unfinished;
            shutDown = _isShutDown;
        }

        string maxSize = _maxSize == 0 ? "unbounded" : _maxSize.ToString(CultureInfo.InvariantCulture);
        return string.Format(
            CultureInfo.InvariantCulture,
            "{0}(maxSize={1}, count={2}, getters={3}, putters={4}, unfinished={5}{6})",
            _name, maxSize, count, getters, putters, unfinished, shutDown ? ", shutdown" : string.Empty);
    }

    private ValueTask PutCore(T item, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        WaitNode<T>? getter;
        WaitNode<T>? putter = null;
        lock (_sync)
        {
            if (_isShutDown)
            {
                return ValueTask.FromException(new QueueShutDownException());
            }

            getter = _getters.Dequeue();
            if (getter is not null)
            {
                // Getters wait only on an empty queue, so the item goes straight to the oldest one.
                getter.SetResult(item);
                _unfinished++;
            }
            else if (!IsFullLocked)
            {
                _store.Add(item);
                _unfinished++;
                return default;
            }
            else if (timeout == TimeSpan.Zero)
            {
                return ValueTask.FromException(ThrowHelper.TimeoutNow());
            }
            else
            {
                putter = _putters.Enqueue(item);
            }
        }

        if (putter is null)
        {
            // Outside the lock: the getter resumes asynchronously, and never under our lock.
            getter!.Complete();
            return default;
        }

        return _putters.ArmNonGeneric(putter, timeout, cancellationToken);
    }

    private ValueTask<T> GetCore(TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<T>(cancellationToken);
        }

        WaitNode<T>? released = null;
        WaitNode<T> getter;
        try
        {
            lock (_sync)
            {
                if (_store.Count > 0 || !_putters.IsEmpty)
                {
                    return new ValueTask<T>(TakeLocked(ref released));
                }

                if (_isShutDown)
                {
                    return ValueTask.FromException<T>(new QueueShutDownException());
                }

                if (timeout == TimeSpan.Zero)
                {
                    return ValueTask.FromException<T>(ThrowHelper.TimeoutNow());
                }

                getter = _getters.Enqueue();
            }
        }
        finally
        {
            // A putter whose item moved in resumes after we leave the lock.
            released?.Complete();
        }

        return _getters.Arm(getter, timeout, cancellationToken);
    }

    private ValueTask JoinCore(TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        WaitNode<T> joiner;
        lock (_sync)
        {
            if (_unfinished == 0)
            {
                return default;
            }

            if (timeout == TimeSpan.Zero)
            {
                return ValueTask.FromException(ThrowHelper.TimeoutNow());
            }

            joiner = _joiners.Enqueue();
        }

        return _joiners.ArmNonGeneric(joiner, timeout, cancellationToken);
    }

    /// <summary>Takes an item without waiting: the non-throwing core of <see cref="TryGet(out T)"/> and the enumerator.</summary>
    private TakeStatus TryTake([MaybeNullWhen(false)] out T item)
    {
        WaitNode<T>? released = null;
        try
        {
            lock (_sync)
            {
                if (_store.Count > 0 || !_putters.IsEmpty)
                {
                    item = TakeLocked(ref released);
                    return TakeStatus.Taken;
                }

                item = default!;
                return _isShutDown ? TakeStatus.ShutDown : TakeStatus.Empty;
            }
        }
        finally
        {
            released?.Complete();
        }
    }

    /// <summary>
    /// Takes the next item. If a putter waits (so the queue is full), its item moves in first and then the next item
    /// is taken in this queue's order, as Toro did. The caller holds the lock, checked that the queue or the putters
    /// are non-empty, and completes <paramref name="released"/> after leaving the lock.
    /// </summary>
    private T TakeLocked(ref WaitNode<T>? released)
    {
        Debug.Assert(_sync.IsHeldByCurrentThread, "the lock must be held");
        if (_putters.Head is { } putter)
        {
            // Add before unlinking: if a priority comparer throws, nothing has changed.
            _store.Add(putter.Payload);
            _putters.Dequeue();
            _unfinished++;
            putter.SetResult(default!);
            released = putter;
        }

        return _store.Take();
    }

    [DoesNotReturn]
    private static void ThrowTaskDoneTooMany() =>
        throw new InvalidOperationException("TaskDone() was called more times than items entered the queue.");

    [DoesNotReturn]
    private static void ThrowShutDown() => throw new QueueShutDownException();
}
