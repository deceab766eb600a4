using System.Diagnostics;
using System.Globalization;
using System.Runtime.ExceptionServices;
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
/// <para><b>Waiting putters move in first.</b> When the queue is full, a put waits carrying its item. A get that lets
/// waiting putters in (with the default <see cref="ResumeSize"/>, any get on a full queue with putters waiting; with a
/// lower one, the get that leaves at most that many items) first moves the oldest waiting putter's item into the queue (that put completes, and the item counts in
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
[DebuggerDisplay("Name = {Name}, Count = {Count}, MaxSize = {MaxSize}, UnfinishedTasks = {UnfinishedTasks}, IsShutDown = {IsShutDown}")]
public abstract partial class AsyncQueueBase<T> : IAsyncEnumerable<T>, IQueueDepth
{
    /// <summary>A waiter's outcome at shutdown: a new exception for each, as for each call after it.</summary>
    private static readonly Func<ExceptionDispatchInfo> s_shutDown = static () => ExceptionDispatchInfo.Capture(new QueueShutDownException());

    /// <summary>Guards every field below and the three lines of waiters.</summary>
    private readonly Lock _sync = new();

    /// <summary>The items in the queue, in this queue's order. Holds more than <see cref="_maxSize"/> only for the
    /// instant between a get moving a putter's item in and taking one.</summary>
    private readonly QueueStore<T> _store;

    /// <summary>FIFO of blocked getters. Non-empty only while <see cref="_store"/> is empty and nobody waits to put.</summary>
    private readonly WaitQueue<T, GetPolicy> _getters;

    /// <summary>FIFO of blocked putters, each carrying its item (not yet in the queue, not counted) in its node's
    /// <see cref="WaitNode{T}.Value"/>. Non-empty only while the queue is not shut down and holds more than
    /// <see cref="_resumeSize"/> items (putters wait from the moment it is full until a get leaves it at or below that).</summary>
    private readonly WaitQueue<T, PutPolicy> _putters;

    /// <summary>FIFO of <see cref="JoinAsync(CancellationToken)"/> callers. Non-empty only while <see cref="_unfinished"/> &gt; 0.</summary>
    private readonly WaitQueue<T, JoinPolicy> _joiners;

    /// <summary>The bound; 0 means unbounded.</summary>
    private readonly int _maxSize;

    /// <summary>The low-water mark: once putters wait, a get lets them in only when it leaves at most this many items.
    /// <c>MaxSize - 1</c> by default (each get lets one in); 0 for an unbounded queue.</summary>
    private readonly int _resumeSize;

    /// <summary>The type's name without generic arity (<c>AsyncQueue</c>), for <see cref="ToString"/>.</summary>
    private readonly string _kind;

    /// <summary>Items that entered the queue (stored or handed to a getter) minus <see cref="TaskDone"/> calls; never negative.</summary>
    private int _unfinished;

    /// <summary>Set once by <see cref="Shutdown(bool)"/>; never cleared.</summary>
    private bool _isShutDown;

    private protected AsyncQueueBase(string kind, int maxSize, QueueStore<T> store, TimeProvider? timeProvider)
    {
        Debug.Assert(maxSize >= 0, "derived constructors validate maxSize with CheckMaxSize");
        TimeProvider time = timeProvider ?? TimeProvider.System;
        _kind = kind;
        _maxSize = maxSize;
        _resumeSize = Math.Max(maxSize - 1, 0);
        _store = store;
        _getters = new WaitQueue<T, GetPolicy>(kind, new GetPolicy(this), _sync, time);
        _putters = new WaitQueue<T, PutPolicy>(kind, new PutPolicy(this), _sync, time);
        _joiners = new WaitQueue<T, JoinPolicy>(kind, new JoinPolicy(this), _sync, time);
    }

    /// <summary>
    /// A name for diagnostics (<c>new AsyncQueue&lt;Job&gt;(100) { Name = "jobs" }</c>): shown by <see cref="ToString"/> and
    /// the <c>asynctools.name</c> tag of its metrics; null (the default) for none.
    /// </summary>
    public string? Name
    {
        get => _getters.Name;
        init
        {
            _getters.Name = _putters.Name = _joiners.Name = value;
            if (value is not null)
            {
                WaitMetrics.RegisterQueue(this);
            }
        }
    }

    /// <summary>The most items the queue holds; 0 means unbounded.</summary>
    public int MaxSize => _maxSize;

    /// <summary>
    /// The low-water mark for waiting putters (back-pressure with hysteresis): once the queue is full, putters that wait
    /// resume only when a get leaves <see cref="Count"/> at or below it, and then as many of them move in, in FIFO order,
    /// as fill the queue again. The default, <c>MaxSize - 1</c>, lets one waiting putter in per get. A lower value lets
    /// the consumer drain a batch before the producers wake, so each producer wake-up moves several items instead of one.
    /// Set it with an object initializer: <c>new AsyncQueue&lt;Job&gt;(1000) { ResumeSize = 500 }</c>. Putters that
    /// arrive while none waits and the queue is not full put at once, as always. An unbounded queue never makes a
    /// putter wait: its <see cref="ResumeSize"/> is 0 and can only be set to 0.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">(On init.) The value is negative or not less than
    /// <see cref="MaxSize"/> (for an unbounded queue: not 0).</exception>
    public int ResumeSize
    {
        get => _resumeSize;
        init
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value, nameof(ResumeSize));
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, Math.Max(_maxSize - 1, 0), nameof(ResumeSize));
            _resumeSize = value;
        }
    }

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
    /// for an unbounded queue. A put also waits while earlier putters wait, which with a <see cref="ResumeSize"/> below
    /// <c>MaxSize - 1</c> can be while this is false.</summary>
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
    public int UnfinishedTasks => Volatile.Read(ref _unfinished);

    /// <summary>Whether <see cref="Shutdown(bool)"/> has been called.</summary>
    public bool IsShutDown => Volatile.Read(ref _isShutDown);

    /// <inheritdoc/>
    string IQueueDepth.Kind => _kind;

    /// <summary>The lines of getters, putters and joiners, for tests.</summary>
    internal WaitLines Lines => new(_getters, _putters, _joiners);

    private bool IsFullLocked => _maxSize != 0 && _store.Count >= _maxSize;

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
                    _joiners.ServeAll(default!, ref completions);
                }
            }

            _putters.FailAll(s_shutDown, MetricNames.ShutDown, ref completions);

            // Getters wait only while the queue is empty, so every one of them fails now.
            Debug.Assert(_getters.IsEmpty || _store.Count == 0, "getters wait only on an empty queue");
            _getters.FailAll(s_shutDown, MetricNames.ShutDown, ref completions);
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
    /// <c>maxSize=unbounded</c>, a shut-down queue ends with <c>, shutdown</c>, and a queue with a <see cref="Name"/>
    /// starts with it: <c>AsyncQueue(name="jobs", maxSize=10, ...)</c>.
    /// </summary>
    /// <returns>The description.</returns>
    public override string ToString()
    {
        int count, unfinished;
        bool shutDown;
        lock (_sync)
        {
            count = _store.Count;
            unfinished = _unfinished;
            shutDown = _isShutDown;
        }

        string maxSize = _maxSize == 0 ? "unbounded" : _maxSize.ToString(CultureInfo.InvariantCulture);
        return Display.Format(
            _kind,
            Name,
            string.Format(
                CultureInfo.InvariantCulture,
                "maxSize={0}, count={1}, getters={2}, putters={3}, unfinished={4}{5}",
                maxSize, count, _getters.Count, _putters.Count, unfinished, shutDown ? ", shutdown" : string.Empty));
    }

    /// <summary>Validates a derived constructor's <paramref name="maxSize"/> before its store is sized from it.</summary>
    private protected static int CheckMaxSize(int maxSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxSize);
        return maxSize;
    }

    private static QueueShutDownException? RefuseIfShutDown(AsyncQueueBase<T> queue) =>
        queue._isShutDown ? new QueueShutDownException() : null;
}
