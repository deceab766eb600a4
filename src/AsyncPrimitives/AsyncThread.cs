using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using AsyncPrimitives.Internal;
using AsyncTools.Polyfills;

namespace AsyncPrimitives;

/// <summary>
/// One dedicated OS thread with a FIFO queue of work, for thread-affine or blocking APIs (the pattern of Python's
/// aiosqlite: a connection that must only ever be used from the thread that opened it, driven from async code).
/// </summary>
/// <remarks>
/// <para><b>Order.</b> Work runs on the dedicated thread, one item at a time, in the order
/// <see cref="RunAsync{T}(Func{T}, CancellationToken)"/> was called; <see cref="IsCurrentThread"/> is true inside it.</para>
/// <para><b>Results and exceptions</b> reach only the caller whose work produced them; the thread goes on with the
/// next item. Callers resume on the thread pool (or their own context), never on the dedicated thread, so their
/// code never holds up the queue.</para>
/// <para><b>Cancellation.</b> A token cancelled before the work starts removes it from the queue (it never runs) and
/// cancels the call; once the work has started it runs to the end (a <see cref="Func{TResult}"/> takes no token). A token
/// already cancelled at the call queues nothing.</para>
/// <para><b>Disposal.</b> <see cref="DisposeAsync"/> refuses new work (<see cref="ObjectDisposedException"/>), runs what
/// was queued, then ends the thread; it completes once the thread has finished its last item. The thread is a background
/// thread: a process that never disposes it can still exit.</para>
/// <para><b>Context.</b> Work runs in the caller's <see cref="ExecutionContext"/> (its <see cref="AsyncLocal{T}"/>
/// values), as with <see cref="Task.Run(Action)"/>, or in an empty one when the caller suppressed the flow; what work
/// sets there (<see cref="AsyncLocal{T}"/> values, the culture) ends with it, and the thread itself keeps nothing of its
/// creator's. Work that calls <see cref="RunAsync{T}(Func{T}, CancellationToken)"/>
/// on its own thread and blocks on the result deadlocks: that work is queued behind it.</para>
/// <para><b>Metrics.</b> While someone listens to the <c>AsyncPrimitives</c> meter, queued work counts in
/// <c>asynctools.waiters</c> and its wait for the thread is recorded in <c>asynctools.wait.duration</c> (kind
/// <c>AsyncThread</c>): outcome <c>acquired</c> when the work starts, <c>canceled</c> when its token removed it.</para>
/// </remarks>
/// <example>
/// <code>
/// await using var db = new AsyncThread("sqlite");
/// var connection = await db.RunAsync(() => OpenConnection());          // opened on the dedicated thread
/// int rows = await db.RunAsync(() => connection.Execute(sql), cancellationToken); // and only ever used there
/// </code>
/// </example>
[DebuggerDisplay("Name = {Name}, Queued = {_queue.Count}, IsDisposed = {_disposing}")]
public sealed class AsyncThread : IAsyncDisposable
{
    /// <summary>Guards the queue and the flags; the dedicated thread waits on it (<see cref="Monitor.Wait(object)"/>)
    /// while there is nothing to run.</summary>
    private readonly object _sync = new();

    private readonly Thread _thread;

    /// <summary>Completed by the dedicated thread when it ends, after its last item.</summary>
    private readonly TaskCompletionSource<bool> _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Items queued and not yet started or removed, oldest (the next to run) first. Each item owns its node,
    /// so a cancelled one leaves in O(1).</summary>
    private readonly LinkedList<Work> _queue = new();

    /// <summary>Set once by <see cref="DisposeAsync"/>: no new work; the thread ends when the queue is empty.</summary>
    private bool _disposing;

    /// <summary>Creates the thread and starts it.</summary>
    /// <param name="name">The thread's name (seen in debuggers and dumps) and this object's <see cref="Name"/>;
    /// <c>"AsyncThread"</c> when null.</param>
    public AsyncThread(string? name = null)
    {
        Name = name;
        _thread = new Thread(Loop) { IsBackground = true, Name = name ?? nameof(AsyncThread) };

        // Without the creator's ExecutionContext: the thread serves every caller (each work item runs in its own
        // caller's), and would otherwise keep the creator's AsyncLocal values alive for its whole life.
        if (ExecutionContext.IsFlowSuppressed())
        {
            _thread.Start();
        }
        else
        {
            using (ExecutionContext.SuppressFlow())
            {
                _thread.Start();
            }
        }
    }

    /// <summary>The name given to the constructor, or null; the <c>asynctools.name</c> tag of its metrics.</summary>
    public string? Name { get; }

    /// <summary>Whether the calling code runs on this object's dedicated thread (inside a work item).</summary>
    public bool IsCurrentThread => Thread.CurrentThread == _thread;

    /// <summary>Runs <paramref name="work"/> on the dedicated thread after the work queued before it.</summary>
    /// <typeparam name="T">The type of the result.</typeparam>
    /// <param name="work">The work.</param>
    /// <param name="cancellationToken">Removes the work from the queue if cancelled before it starts.</param>
    /// <returns>A task with the result of <paramref name="work"/>, or its exception.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><see cref="DisposeAsync"/> was called.</exception>
    /// <exception cref="OperationCanceledException">(From the task.) <paramref name="cancellationToken"/> was
    /// cancelled before the work started; it did not run.</exception>
    public Task<T> RunAsync<T>(Func<T> work, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        var item = new Work<T>(this, work);
        Enqueue(item, cancellationToken);
        return item.Task;
    }

    /// <summary>Runs <paramref name="work"/> on the dedicated thread after the work queued before it.</summary>
    /// <param name="work">The work.</param>
    /// <param name="cancellationToken">Removes the work from the queue if cancelled before it starts.</param>
    /// <returns>A task that completes when <paramref name="work"/> has run, with its exception if it threw.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><see cref="DisposeAsync"/> was called.</exception>
    /// <exception cref="OperationCanceledException">(From the task.) <paramref name="cancellationToken"/> was
    /// cancelled before the work started; it did not run.</exception>
    public Task RunAsync(Action work, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        var item = new Work<bool>(this, () =>
        {
            work();
            return true;
        });
        Enqueue(item, cancellationToken);
        return item.Task;
    }

    /// <summary>Refuses new work, runs what was queued, then ends the thread. Calling it again is harmless.</summary>
    /// <returns>A task that completes when the thread has run its last item.</returns>
    public ValueTask DisposeAsync()
    {
        lock (_sync)
        {
            _disposing = true;
            Monitor.Pulse(_sync);
        }

        return new ValueTask(_ended.Task);
    }

    /// <summary>Describes the state: <c>AsyncThread(queued=2)</c>, or with a <see cref="Name"/>
    /// <c>AsyncThread(name="sqlite", queued=2)</c>, ending with <c>, disposed</c> once <see cref="DisposeAsync"/> was called.</summary>
    /// <returns>The description.</returns>
    public override string ToString()
    {
        int queued;
        bool disposing;
        lock (_sync)
        {
            queued = _queue.Count;
            disposing = _disposing;
        }

        return Display.Format(
            nameof(AsyncThread), Name, string.Format(CultureInfo.InvariantCulture, "queued={0}{1}", queued, disposing ? ", disposed" : string.Empty));
    }

    private void Enqueue(Work item, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            ThrowIfDisposed(Volatile.Read(ref _disposing));
            item.Cancel(cancellationToken);
            return;
        }

        bool cancelled;
        bool countsAsWaiter = false;
        lock (_sync)
        {
            ThrowIfDisposed(_disposing);

            // Registered before the item is queued, as the wait engine does: a cancellation that completes after this
            // finds the item queued and removes it; one that came in between is seen here. A callback that runs inside
            // the registration re-enters this (reentrant) lock and finds nothing to remove.
            item.Watch(cancellationToken);
            cancelled = cancellationToken.IsCancellationRequested;
            if (!cancelled)
            {
                _queue.AddLast(item.Node);
                item.Metering = WaitMetrics.Start();
                countsAsWaiter = item.Metering.CountsAsWaiter;
                if (_queue.Count == 1)
                {
                    Monitor.Pulse(_sync);
                }
            }
        }

        if (cancelled)
        {
            item.Cancel(cancellationToken);
        }
        else if (countsAsWaiter)
        {
            try
            {
                WaitMetrics.Queued(nameof(AsyncThread), Name); // outside the lock: a listener's callback is user code
            }
            catch (Exception e)
            {
                // As the wait engine does: the call fails with the listener's exception and never runs, unless it has
                // started (or was cancelled) meanwhile: then it keeps that outcome.
                if (TryRemove(item, MetricNames.Error, out WaitMetering metering))
                {
                    item.Fail(e);
                    WaitMetrics.EndedQuietly(metering, nameof(AsyncThread), Name);
                }
            }
        }
    }

    private static void ThrowIfDisposed(bool disposing)
    {
        if (disposing)
        {
            ThrowHelper.ThrowObjectDisposed(nameof(AsyncThread));
        }
    }

    /// <summary>Takes <paramref name="item"/> out of the queue if it has not started (nor left): it will never run. Its
    /// metering comes back marked <paramref name="outcome"/>, to be recorded once its caller has the outcome.</summary>
    private bool TryRemove(Work item, string outcome, out WaitMetering metering)
    {
        lock (_sync)
        {
            metering = item.Metering;
            if (item.Node.List is null)
            {
                return false;
            }

            _queue.Remove(item.Node);
        }

        metering.Outcome = outcome;
        return true;
    }

    /// <summary>The dedicated thread: runs queued items in order until disposal has emptied the queue.</summary>
    private void Loop()
    {
        // The thread's own context, empty (it was started without its creator's): work whose caller flows none runs in
        // a copy of it, so that nothing such work sets (AsyncLocal values, the culture) outlives it.
        ExecutionContext? threadContext = ExecutionContext.Capture();
        while (RunNext(threadContext))
        {
        }

        _ended.TrySetResult(true);
    }

    /// <summary>Waits for the next item and runs it; false once disposal has emptied the queue. A method of its own so
    /// that no frame of the idle thread still references the last item (its delegate, what that captured, its result).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool RunNext(ExecutionContext? threadContext)
    {
        Work? item;
        WaitMetering metering;
        lock (_sync)
        {
            while (_queue.Count == 0 && !_disposing)
            {
                Monitor.Wait(_sync);
            }

            item = _queue.First?.Value;
            if (item is null)
            {
                return false; // disposed and drained
            }

            _queue.RemoveFirst();
            metering = item.Metering;
        }

        if (metering.IsActive)
        {
            WaitMetrics.Ended(metering, nameof(AsyncThread), Name); // the work waited until now: it starts
        }

        item.Run(threadContext);
        return true;
    }

    /// <summary>The cancellation callback: removes the item if it has not started.</summary>
    private void OnCanceled(Work item, CancellationToken cancellationToken)
    {
        if (TryRemove(item, MetricNames.Canceled, out WaitMetering metering))
        {
            // The outcome first, then the measurement: a listener that throws cannot leave the call pending.
            item.Cancel(cancellationToken);
            WaitMetrics.Ended(metering, nameof(AsyncThread), Name);
        }
    }

    /// <summary>A queued call: its node in the queue (so a cancelled one leaves in O(1)), and its caller's task.</summary>
    private abstract class Work
    {
        private static readonly Action<object?> s_onCanceled = static state => ((Work)state!).OnCanceled();
        private static readonly ContextCallback s_invoke = static state => ((Work)state!).Invoke();

        private readonly AsyncThread _owner;

        /// <summary>The caller's context, or null when it flows nothing.</summary>
        private readonly ExecutionContext? _context = ExecutionContext.Capture();

        private CancellationToken _token;
        private CancellationTokenRegistration _registration;

        protected Work(AsyncThread owner)
        {
            _owner = owner;
            Node = new LinkedListNode<Work>(this);
        }

        /// <summary>The item's node in the owner's queue; in a list while queued. Guarded by the owner's lock.</summary>
        public LinkedListNode<Work> Node { get; }

        /// <summary>How its wait for the thread is metered, set as it is queued (all defaults while nobody listens);
        /// recorded when it starts or is cancelled. Guarded by the owner's lock.</summary>
        public WaitMetering Metering { get; set; }

        /// <summary>Registers the cancellation that removes the item while it is queued. Under the owner's lock, before
        /// the item is queued.</summary>
        public void Watch(CancellationToken cancellationToken)
        {
            if (cancellationToken.CanBeCanceled)
            {
                _token = cancellationToken;
                _registration = cancellationToken.RegisterNoFlow(s_onCanceled, this);
            }
        }

        /// <summary>On the dedicated thread, after the item was unlinked: runs it in its caller's context (or, when the
        /// caller flows none, in the thread's own) and completes its task. The thread's context is restored afterwards.</summary>
        public void Run(ExecutionContext? threadContext)
        {
            // Waits for a cancellation callback running now; it finds the item unlinked and changes nothing.
            _registration.Dispose();
            if ((_context ?? threadContext) is { } context)
            {
                ExecutionContext.Run(context.CreateCopy(), s_invoke, this); // a copy: .NET Framework runs a context once
            }
            else
            {
                Invoke();
            }
        }

        /// <summary>Completes the caller's task as cancelled; the work never runs.</summary>
        public abstract void Cancel(CancellationToken cancellationToken);

        /// <summary>After the item was unlinked: fails the caller's task with <paramref name="error"/>; the work never runs.</summary>
        public void Fail(Exception error)
        {
            _registration.Dispose();
            SetException(error);
        }

        protected abstract void SetException(Exception error);

        protected abstract void Invoke();

        private void OnCanceled() => _owner.OnCanceled(this, _token);
    }

    private sealed class Work<T>(AsyncThread owner, Func<T> work) : Work(owner)
    {
        /// <summary>Continuations run asynchronously: never on the dedicated thread, which goes on with the next item.</summary>
        private readonly TaskCompletionSource<T> _result = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<T> Task => _result.Task;

        public override void Cancel(CancellationToken cancellationToken) => _result.TrySetCanceled(cancellationToken);

        protected override void SetException(Exception error) => _result.TrySetException(error);

        [MethodImpl(MethodImplOptions.NoInlining)]
        protected override void Invoke()
        {
            T result;
            try
            {
                result = work();
            }
#pragma warning disable CA1031 // an exception of the work belongs to its caller alone
            catch (Exception error)
#pragma warning restore CA1031
            {
                if (error is OperationCanceledException canceled)
                {
                    _result.TrySetCanceled(canceled.CancellationToken);
                }
                else
                {
                    _result.TrySetException(error);
                }

                return;
            }

            _result.TrySetResult(result);
        }
    }
}
