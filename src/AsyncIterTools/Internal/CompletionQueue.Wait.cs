using System.Diagnostics;
using System.Threading.Tasks.Sources;

namespace AsyncIterTools.Internal;

/// <content>
/// The consumer's wait: <see cref="NextAsync"/> takes the next completion, or parks the consumer on this queue until
/// <see cref="Post"/> hands one over (from a pool work item of its own, <see cref="Deliver"/>) or the wait's token ends it.
/// </content>
internal sealed partial class CompletionQueue<TArg, TResult>
{
    private static readonly Action<object?> s_cancelWait = static s => ((CompletionQueue<TArg, TResult>)s!).CancelWait();

    /// <summary>
    /// The consumer's parking spot. It is completed from a thread-pool work item of its own (<see cref="Deliver"/>), never
    /// inside the call that completed, so a call completing on its own thread never runs the consumer (and the user code
    /// it calls next) inline; the consumer resumes on its context when it had one.
    /// </summary>
    private ManualResetValueTaskSourceCore<Operation> _waiter;

    /// <summary>The operation handed to the parked consumer, between <see cref="Post"/> and <see cref="Deliver"/>; null
    /// for a wait <see cref="CancelWait"/> ended.</summary>
    private Operation? _handOff;

    /// <summary>True while the consumer is parked on <see cref="_waiter"/>; then <see cref="_completed"/> is empty.</summary>
    private bool _waiting;

    /// <summary>The token that may end the current wait, and its registration (consumer side).</summary>
    private CancellationToken _waitToken;

    private CancellationTokenRegistration _waitRegistration;

    /// <summary>Waits for the next call to complete (in completion order) and takes its operation.</summary>
    /// <remarks>
    /// Synchronous when a completion is already queued (the common case under load). Otherwise the consumer parks on this
    /// queue (no allocation) until a completion is handed over. A wait ended by <paramref name="cancellationToken"/> takes
    /// nothing, so no completion is ever lost.
    /// </remarks>
    public ValueTask<Operation> NextAsync(CancellationToken cancellationToken = default)
    {
        Debug.Assert(_inFlight > 0 || _moving, "No call or move is in flight.");
        lock (_lock)
        {
            if (_completed.Count > 0)
            {
                return new ValueTask<Operation>(Take(_completed.Dequeue()));
            }

            if (cancellationToken.IsCancellationRequested)
            {
                return ValueTask.FromCanceled<Operation>(cancellationToken);
            }

            _waiting = true;
        }

        if (cancellationToken.CanBeCanceled)
        {
            // Registered after parking: a token cancelled meanwhile runs CancelWait right here.
            _waitToken = cancellationToken;
            _waitRegistration = cancellationToken.RegisterNoFlow(s_cancelWait, this);
        }

        return new ValueTask<Operation>(this, _waiter.Version);
    }

    /// <summary>Runs <see cref="Deliver"/>: the queue is the work item <see cref="Post"/> queues.</summary>
    void IThreadPoolWorkItem.Execute() => Deliver();

    /// <summary>Completes the parked consumer's wait with the handed-off operation, or with the wait token's
    /// cancellation when none was handed off (see <see cref="CancelWait"/>); its continuation runs here or on its context.</summary>
    private void Deliver()
    {
        Operation? operation = _handOff;
        _handOff = null;
        if (operation is null)
        {
            _waiter.SetException(new OperationCanceledException(_waitToken));
            return;
        }

        _waiter.SetResult(operation);
    }

    /// <summary>Ends the consumer's wait with cancellation, unless a completion was handed over first (it then stays
    /// delivered). As every wake-up, from a pool work item of its own: never inline in the canceller's <c>Cancel()</c>
    /// or a deadline's timer callback.</summary>
    private void CancelWait()
    {
        lock (_lock)
        {
            if (!_waiting)
            {
                return;
            }

            _waiting = false;
        }

        Compat.UnsafeQueue(this);
    }

    Operation IValueTaskSource<Operation>.GetResult(short token)
    {
        // Waits for a CancelWait already running, so the next wait never sees this one's cancellation.
        _waitRegistration.Dispose();
        _waitRegistration = default;
        _waitToken = default;
        try
        {
            return Take(_waiter.GetResult(token));
        }
        finally
        {
            _waiter.Reset();
        }
    }

    ValueTaskSourceStatus IValueTaskSource<Operation>.GetStatus(short token) => _waiter.GetStatus(token);

    void IValueTaskSource<Operation>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _waiter.OnCompleted(continuation, state, token, flags);
}
