using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks.Sources;
using AsyncTools.Polyfills;

namespace AsyncPrimitives.Internal;

/// <summary>
/// One waiter: a pooled, reusable <see cref="IValueTaskSource{TResult}"/> linked into a <see cref="WaitQueue{T, TPolicy}"/>.
/// </summary>
/// <remarks>
/// <para>Lifecycle: rented from its home queue, registered for cancellation and linked under the owner's lock;
/// armed with its timeout outside it; unlinked under the lock by exactly one of grant, cancellation, timeout or shutdown, which
/// records the outcome; completed outside the lock (so a continuation or a SynchronizationContext.Post never runs
/// under our lock); recycled into its home queue by <see cref="GetResult"/> once the awaiter has observed the
/// outcome. A waiter of an <see cref="AsyncCondition"/> has one more step: once it leaves the condition's line it
/// joins the line of the condition's lock (<see cref="IWaitQueue{T}.Join"/>), and is completed when that lock is
/// handed to it.</para>
/// <para>"Nothing is lost" rests on one rule: only the party that unlinks the node under the lock decides its
/// outcome. A grant that wins makes the wait succeed, however close the cancellation came; a cancellation that
/// wins leaves the node holding nothing, and the grant goes to the next waiter.</para>
/// <para>The awaitable state is the node's own rather than a ManualResetValueTaskSourceCore: delivering an outcome
/// is one exchange on <see cref="_continuation"/>, after which the completer never touches the node again unless
/// that exchange handed it a parked continuation to schedule (and then the awaiter cannot recycle the node before
/// the continuation it has not yet been given runs). So the node needs no count of who still uses it, and the
/// contended cycle (park, get granted, resume, recycle) costs one atomic for the park and one for the delivery.</para>
/// </remarks>
internal sealed class WaitNode<T> : IValueTaskSource<T>, IValueTaskSource
{
    private static readonly Action<object?> s_onCanceled = static state => ((WaitNode<T>)state!).OnCanceled();
    private static readonly TimerCallback s_onTimedOut = static state => ((WaitNode<T>)state!).OnTimedOut();

    /// <summary>Stored in <see cref="_continuation"/> once the outcome is delivered. Never invoked.</summary>
    private static readonly Action<object?> s_delivered = static _ => Debug.Fail("the delivered sentinel is never invoked");

    /// <summary>The queue this node was rented from: where its cancellation and timeout act, and where it is recycled.</summary>
    private readonly IWaitQueue<T> _home;

    /// <summary>
    /// Null while the outcome is undelivered and nobody awaits; the awaiter's continuation once it parks;
    /// <see cref="s_delivered"/> once <see cref="Complete"/> has run. Moves only null → continuation → delivered or
    /// null → delivered, each by one atomic, until <see cref="Recycle"/> resets it for the next wait.
    /// </summary>
    private object? _continuation;

    /// <summary>The parked continuation's argument. Written before the continuation is published.</summary>
    private object? _continuationState;

    /// <summary>Where the parked continuation must run: a SynchronizationContext or a TaskScheduler captured by
    /// <see cref="OnCompleted"/>, or null for the thread pool.</summary>
    private object? _schedulingContext;

    /// <summary>The ExecutionContext the parked continuation must run in, when the awaiter asked for it to flow.</summary>
    private ExecutionContext? _executionContext;

    /// <summary>Identifies the current wait; a ValueTask from an earlier wait on this node carries an older value.</summary>
    private short _version;

    /// <summary>The error outcome, if the wait failed (canceled, timed out, shut down), captured once when it was
    /// decided: waiters failed with one shared exception (a result set with an exception) each rethrow it from that one
    /// capture, so none sees another's frames. For a condition waiter that timed out or was cancelled it is
    /// recorded before the lock is handed back, and delivered with it.</summary>
    private ExceptionDispatchInfo? _error;

    /// <summary>The token the wait was armed with; used to build the OperationCanceledException.</summary>
    private CancellationToken _token;

    /// <summary>Registration on <see cref="_token"/>; disposed (waiting out a running callback) before recycling.</summary>
    private CancellationTokenRegistration _registration;

    /// <summary>
    /// Whether disposing a timer of <see cref="TimeProvider.System"/> tells when its callback can no longer run: true
    /// where the system timer is the runtime's own (its <c>DisposeAsync</c> completes synchronously exactly when no
    /// callback is queued or running, and a queued one then never runs), false for the netstandard2.0 polyfill's.
    /// </summary>
    private static readonly bool s_systemTimerDisposalIsExact = typeof(TimeProvider).Assembly == typeof(object).Assembly;

    /// <summary>The timeout timer, if the wait had a finite timeout. The node is recycled only once the timer is known
    /// to be quiet (see <see cref="Recycle"/>), so a late timer callback can only ever see this wait's node.</summary>
    private ITimer? _timer;

    /// <summary>Whether <see cref="_timer"/> is a system timer whose disposal says when its callback is quiet.</summary>
    private bool _timerDisposalIsExact;

    public WaitNode(IWaitQueue<T> home) => _home = home;

    /// <summary>Previous node in the queue while linked.</summary>
    internal WaitNode<T>? Previous;

    /// <summary>Next node in the queue while linked; after unlinking, the next node of a <see cref="Completions{T}"/>
    /// chain; in the pool, the next free node.</summary>
    internal WaitNode<T>? Next;

    /// <summary>The queue the node is linked into, or null. Written under that queue's lock.</summary>
    internal IWaitQueue<T>? Queue;

    /// <summary>
    /// The one value a wait carries. While the node waits, what the waiter brought (a putter's item, the releaser a
    /// reader-writer waiter asks for: the primitive's policy reads it); once served, what the waiter is handed.
    /// Guarded by the lock until the outcome is delivered.
    /// </summary>
    internal T Value = default!;

    /// <summary>What the metrics record of this wait when its outcome is delivered; set under the home queue's lock as
    /// the wait queues, all defaults while nobody listens. Reset by <see cref="Complete"/>.</summary>
    internal WaitMetering Metering;

    /// <summary>Whether the node is linked into a queue.</summary>
    internal bool IsQueued => Queue is not null;

    internal ValueTask<T> AsValueTask() => new(this, _version);

    internal ValueTask AsNonGenericValueTask() => new(this, _version);

    /// <summary>
    /// Registers the cancellation callback. Called under the lock, before the node is linked, so a cancellation that
    /// completes after this is sure to find the node and unlink it. False if the token was cancelled meanwhile: the
    /// caller fails the wait as cancelled and drops the node (a callback that ran or is running may still call
    /// <see cref="IWaitQueue{T}.Abandon"/> for it, which then finds it unlinked; so it is never reused).
    /// </summary>
    /// <remarks>A callback that runs inside the registration (the token was cancelled just now) re-enters the lock,
    /// which is reentrant, and changes nothing. A cancelled token's callbacks have run or are being run by the
    /// canceller, so there is nothing to unregister (and waiting for one here could deadlock: it may be blocked on
    /// the lock this thread holds).</remarks>
    internal bool Watch(CancellationToken cancellationToken)
    {
        if (!cancellationToken.CanBeCanceled)
        {
            return true;
        }

        _token = cancellationToken;
        _registration = cancellationToken.RegisterNoFlow(s_onCanceled, this);
        return !cancellationToken.IsCancellationRequested;
    }

    /// <summary>Starts the timeout timer. Called outside the lock, after the node was linked; the outcome may already
    /// be decided, in which case the callback finds it unlinked.</summary>
    internal void ArmTimeout(TimeSpan timeout, TimeProvider timeProvider)
    {
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            _timer = timeProvider.CreateTimer(s_onTimedOut, this, timeout, Timeout.InfiniteTimeSpan);
            _timerDisposalIsExact = s_systemTimerDisposalIsExact && ReferenceEquals(timeProvider, TimeProvider.System);
        }
    }

    /// <summary>Records a successful outcome. Caller holds the lock and has unlinked the node.</summary>
    internal void SetResult(T result)
    {
        Debug.Assert(!IsQueued, "decide the outcome only after unlinking");
        Value = result;
    }

    /// <summary>Records a failed outcome. Caller holds the lock and has unlinked the node.</summary>
    internal void SetError(ExceptionDispatchInfo error)
    {
        Debug.Assert(!IsQueued, "decide the outcome only after unlinking");
        _error = error;
    }

    /// <summary>
    /// Delivers the recorded outcome. Called outside the lock. The exchange publishes the outcome; if the awaiter
    /// had already parked a continuation it is queued, never inlined, so a releaser never runs a waiter's code.
    /// </summary>
    /// <param name="preferLocal">Queue a pool continuation to the current thread's local queue (one waiter handed
    /// something) rather than the pool's global queue (one of several waiters served at once): see
    /// <see cref="Completions{T}.CompleteAll"/>.</param>
    internal void Complete(bool preferLocal)
    {
        // Taken before the exchange, which hands the node to its awaiter (and so to its next wait); recorded after it,
        // so that a listener that throws cannot keep the outcome from its waiter.
        WaitMetering metering = Metering;
        IWaitQueue<T> home = _home;
        Metering = default;

        object? parked = Interlocked.Exchange(ref _continuation, s_delivered);
        Debug.Assert(!ReferenceEquals(parked, s_delivered), "an outcome is delivered once");
        if (parked is not null)
        {
            // The awaiter is parked: it cannot recycle the node before this continuation runs, so the fields it
            // wrote before publishing the continuation are still this wait's.
            Schedule((Action<object?>)parked, preferLocal);
        }

        if (metering.IsActive)
        {
            home.OnMeteredWaitEnded(metering);
        }
    }

    private void OnCanceled() => _home.Abandon(this, new OperationCanceledException(_token), MetricNames.Canceled);

    private void OnTimedOut() => _home.Abandon(this, ThrowHelper.TimeoutNow(), MetricNames.TimedOut);

    public ValueTaskSourceStatus GetStatus(short token)
    {
        ValidateToken(token);
        return !ReferenceEquals(Volatile.Read(ref _continuation), s_delivered) ? ValueTaskSourceStatus.Pending
            : _error is null ? ValueTaskSourceStatus.Succeeded
            : _error.SourceException is OperationCanceledException ? ValueTaskSourceStatus.Canceled
            : ValueTaskSourceStatus.Faulted;
    }

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ValidateToken(token);
        object? current = Volatile.Read(ref _continuation);
        if (current is not null && !ReferenceEquals(current, s_delivered))
        {
            // A second consumer of a pending wait (misuse): rejected before it writes anything, so the continuation
            // already parked still runs with its own state and contexts, and gets the outcome.
            ThrowHelper.ThrowInvalidOperation_ValueTaskMisuse();
        }

        // Capture what the continuation must run with before publishing it: once published, Complete reads these.
        if ((flags & ValueTaskSourceOnCompletedFlags.FlowExecutionContext) != 0)
        {
            _executionContext = ExecutionContext.Capture();
        }

        if ((flags & ValueTaskSourceOnCompletedFlags.UseSchedulingContext) != 0)
        {
            SynchronizationContext? context = SynchronizationContext.Current;
            if (context is not null && context.GetType() != typeof(SynchronizationContext))
            {
                _schedulingContext = context;
            }
            else if (TaskScheduler.Current is { } scheduler && scheduler != TaskScheduler.Default)
            {
                _schedulingContext = scheduler;
            }
        }

        _continuationState = state;
        object? previous = Interlocked.CompareExchange(ref _continuation, continuation, null);
        if (previous is null)
        {
            return; // parked: Complete will schedule it
        }

        if (!ReferenceEquals(previous, s_delivered))
        {
            ThrowHelper.ThrowInvalidOperation_ValueTaskMisuse();
        }

        // Already delivered: still resume asynchronously, as a parked continuation would.
        Schedule(continuation, preferLocal: true);
    }

    public T GetResult(short token)
    {
        // A pending node must never be recycled: reject GetResult before completion (misuse such as blocking on
        // a pending ValueTask) without touching the node.
        ValidateToken(token);
        if (!ReferenceEquals(Volatile.Read(ref _continuation), s_delivered))
        {
            ThrowHelper.ThrowInvalidOperation_ValueTaskMisuse();
        }

        T result = Value;
        ExceptionDispatchInfo? error = _error;
        Recycle();
        error?.Throw();

        return result;
    }

    void IValueTaskSource.GetResult(short token) => GetResult(token);

    private void ValidateToken(short token)
    {
        if (token != _version)
        {
            ThrowHelper.ThrowInvalidOperation_ValueTaskMisuse();
        }
    }

    private void Recycle()
    {
        // Invalidate the awaiter's token first: a second GetResult on the same ValueTask (awaiting it twice) must
        // throw, not recycle this node again (pooling it twice would link the free list to itself and hand one node
        // to two waiters). Then drop every reference to this wait: its exception, which for a cancellation holds the
        // token and so its CancellationTokenSource, and the awaiter's continuation and contexts, so a pooled node
        // keeps nothing alive.
        _version++;
        _continuationState = null;
        _schedulingContext = null;
        _executionContext = null;
        Value = default!;
        _error = null;

        // Dispose waits for a cancellation callback that is running right now, so none can touch the node after this.
        _registration.Dispose();
        _registration = default;
        _token = default;

        ITimer? timer = _timer;
        if (timer is not null && !TryDisposeQuietly(timer))
        {
            // A timer callback may still be in flight: let the GC have this node instead of reusing it.
            return;
        }

        _continuation = null;
        _home.Return(this);
    }

    /// <summary>Disposes the timeout timer; true if its callback is known never to run from now on, so the node may be
    /// reused. Only a system timer can say so; any other provider's timer might still call back late. A provider's
    /// timer whose <c>Dispose</c> throws is ignored: the wait's outcome is decided, and a granted wait must not lose its
    /// grant to it (its late callback finds the outcome decided and changes nothing).</summary>
    private bool TryDisposeQuietly(ITimer timer)
    {
        _timer = null;
        bool exact = _timerDisposalIsExact;
        _timerDisposalIsExact = false;
        if (!exact)
        {
            timer.DisposeQuietly();
            return false;
        }

        // Completes synchronously unless a callback is running now; then it completes when that callback returns,
        // and nothing needs to wait for it: the node is simply not reused.
        return timer.DisposeAsync().IsCompletedSuccessfully;
    }

    /// <summary>Runs the awaiter's <paramref name="continuation"/> asynchronously where <see cref="OnCompleted"/> recorded:
    /// its SynchronizationContext or TaskScheduler, else the thread pool (its local queue when <paramref name="preferLocal"/>,
    /// else its global queue); in its ExecutionContext when that was captured.
    /// Reads the node's fields before queuing anything: once queued, the continuation may recycle the node.</summary>
    private void Schedule(Action<object?> continuation, bool preferLocal)
    {
        object? state = _continuationState;
        object? schedulingContext = _schedulingContext;
        ExecutionContext? executionContext = _executionContext;
        if (schedulingContext is null && executionContext is null)
        {
            Compat.UnsafeQueue(continuation, state, preferLocal);
            return;
        }

        var work = new ScheduledContinuation(continuation, state, executionContext);
        switch (schedulingContext)
        {
            case SynchronizationContext context:
                context.Post(static s => ((ScheduledContinuation)s!).Run(), work);
                break;
            case TaskScheduler scheduler:
                _ = Task.Factory.StartNew(
                    static s => ((ScheduledContinuation)s!).Run(), work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, scheduler);
                break;
            default:
                Compat.UnsafeQueue(static s => ((ScheduledContinuation)s!).Run(), work, preferLocal);
                break;
        }
    }

    /// <summary>A continuation with the ExecutionContext it must run in, if any, bound for a SynchronizationContext,
    /// a TaskScheduler or the pool. Only awaits that captured a context pay for this allocation.</summary>
    private sealed class ScheduledContinuation(Action<object?> continuation, object? state, ExecutionContext? executionContext)
    {
        public void Run()
        {
            if (executionContext is null)
            {
                continuation(state);
            }
            else
            {
                ExecutionContext.Run(executionContext, static s => ((ScheduledContinuation)s!).Invoke(), this);
            }
        }

        private void Invoke() => continuation(state);
    }
}
