using System.Diagnostics;
using System.Threading.Tasks.Sources;

namespace AsyncPrimitives.Internal;

/// <summary>
/// One waiter: a pooled, reusable <see cref="IValueTaskSource{TResult}"/> linked into a <see cref="WaitQueue{T}"/>.
/// </summary>
/// <remarks>
/// <para>Lifecycle: rented and linked under the owner's lock; armed with cancellation and timeout outside it;
/// unlinked under the lock by exactly one of grant, cancellation, timeout or shutdown, which records the outcome;
/// completed outside the lock (so a continuation or a SynchronizationContext.Post never runs under our lock);
/// recycled by <see cref="GetResult"/> once the awaiter has observed the outcome.</para>
/// <para>"Nothing is lost" rests on one rule: only the party that unlinks the node under the lock decides its
/// outcome. A grant that wins makes the wait succeed, however close the cancellation came; a cancellation that
/// wins leaves the node holding nothing, and the grant goes to the next waiter.</para>
/// </remarks>
internal sealed class WaitNode<T> : IValueTaskSource<T>, IValueTaskSource
{
    private static readonly Action<object?> s_onCanceled = static state => ((WaitNode<T>)state!).OnCanceled();
    private static readonly TimerCallback s_onTimedOut = static state => ((WaitNode<T>)state!).OnTimedOut();

    private readonly WaitQueue<T> _queue;

    /// <summary>The awaitable state. Continuations always run asynchronously: a releaser never runs a waiter's code.</summary>
    private ManualResetValueTaskSourceCore<T> _core;

    /// <summary>The outcome decided under the lock and delivered by <see cref="Complete"/>: a value or an error.</summary>
    private T _result = default!;

    /// <summary>The error outcome, if the wait failed (canceled, timed out, shut down).</summary>
    private Exception? _error;

    /// <summary>The token the wait was armed with; used to build the OperationCanceledException.</summary>
    private CancellationToken _token;

    /// <summary>Registration on <see cref="_token"/>; disposed (waiting out a running callback) before recycling.</summary>
    private CancellationTokenRegistration _registration;

    /// <summary>The timeout timer, if the wait had a finite timeout. A node that had one is never recycled, so a
    /// late timer callback can only ever see this wait's node, already unlinked.</summary>
    private ITimer? _timer;

    public WaitNode(WaitQueue<T> queue)
    {
        _queue = queue;
        _core.RunContinuationsAsynchronously = true;
    }

    /// <summary>Previous node in the queue while linked.</summary>
    internal WaitNode<T>? Previous;

    /// <summary>Next node in the queue while linked; after unlinking, the next node of a <see cref="Completions{T}"/>
    /// chain; in the pool, the next free node.</summary>
    internal WaitNode<T>? Next;

    /// <summary>True while the node is linked into its queue. Guarded by the owner's lock.</summary>
    internal bool IsQueued;

    /// <summary>Primitive-specific data carried by the waiter: the item a putter offers. Guarded by the lock.</summary>
    internal T Payload = default!;

    /// <summary>Primitive-specific kind of waiter (for example reader or writer). Guarded by the lock.</summary>
    internal int Kind;

    /// <summary>
    /// Parties that still use this wait: the completer (until <see cref="Complete"/> has fully returned) and the
    /// awaiter (until <see cref="GetResult"/>). The node goes back to the pool only when both are done: an awaiter
    /// can observe completion while the completing thread is still inside the core's signalling code, and reusing
    /// the node at that moment could hand the old completion's wake-up to the next waiter.
    /// </summary>
    private int _owners;

    /// <summary>Resets the node for a new wait. Called under the lock by <see cref="WaitQueue{T}"/>.</summary>
    internal void Prepare(T payload, int kind)
    {
        _core.Reset();
        _owners = 2;
        Payload = payload;
        Kind = kind;
        _result = default!;
        _error = null;
    }

    internal ValueTask<T> AsValueTask() => new(this, _core.Version);

    internal ValueTask AsNonGenericValueTask() => new(this, _core.Version);

    /// <summary>Registers the cancellation callback and starts the timeout timer. Called outside the lock, after the
    /// node was linked; the outcome may already be decided, in which case the callbacks find it unlinked.</summary>
    internal void Arm(TimeSpan timeout, CancellationToken cancellationToken, TimeProvider timeProvider)
    {
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            _timer = timeProvider.CreateTimer(s_onTimedOut, this, timeout, Timeout.InfiniteTimeSpan);
        }

        if (cancellationToken.CanBeCanceled)
        {
            _token = cancellationToken;
            _registration = cancellationToken.RegisterNoFlow(s_onCanceled, this);
        }
    }

    /// <summary>Records a successful outcome. Caller holds the lock and has unlinked the node.</summary>
    internal void SetResult(T result)
    {
        Debug.Assert(!IsQueued, "decide the outcome only after unlinking");
        _result = result;
    }

    /// <summary>Records a failed outcome. Caller holds the lock and has unlinked the node.</summary>
    internal void SetError(Exception error)
    {
        Debug.Assert(!IsQueued, "decide the outcome only after unlinking");
        _error = error;
    }

    /// <summary>Delivers the recorded outcome. Called outside the lock; continuations are queued, never inlined.</summary>
    internal void Complete()
    {
        if (_error is { } error)
        {
            _core.SetException(error);
        }
        else
        {
            _core.SetResult(_result);
        }

        ReleaseOwnership();
    }

    private void OnCanceled() => _queue.Abandon(this, new OperationCanceledException(_token));

    private void OnTimedOut() => _queue.Abandon(this, ThrowHelper.TimeoutNow());

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);

    public T GetResult(short token)
    {
        // A pending node must never be recycled: reject GetResult before completion (misuse such as blocking on
        // a pending ValueTask) without touching the node.
        if (token != _core.Version || _core.GetStatus(token) == ValueTaskSourceStatus.Pending)
        {
            ThrowHelper.ThrowInvalidOperation_ValueTaskMisuse();
        }

        try
        {
            return _core.GetResult(token);
        }
        finally
        {
            Recycle();
        }
    }

    void IValueTaskSource.GetResult(short token) => GetResult(token);

    private void Recycle()
    {
        // Invalidate the awaiter's token first: a second GetResult on the same ValueTask (awaiting it twice) must
        // throw, not recycle this node again (pooling it twice would link the free list to itself and hand one node
        // to two waiters). Reset also drops the core's references to this wait: its exception, which for a
        // cancellation holds the token and so its CancellationTokenSource, and the awaiter's continuation and state,
        // so a pooled node keeps nothing alive.
        _core.Reset();

        // Dispose waits for a cancellation callback that is running right now, so none can touch the node after this.
        _registration.Dispose();
        _registration = default;
        _token = default;
        Payload = default!;
        _result = default!;
        _error = null;

        ITimer? timer = _timer;
        if (timer is not null)
        {
            _timer = null;
            timer.Dispose();
            _owners = -1; // a timer callback may still be in flight: let the GC have this node instead of reusing it
            return;
        }

        ReleaseOwnership();
    }

    /// <summary>Called once by the completer and once by the awaiter; the last one pools the node.</summary>
    private void ReleaseOwnership()
    {
        if (Interlocked.Decrement(ref _owners) == 0)
        {
            _queue.Return(this);
        }
    }
}
