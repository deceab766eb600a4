using System.Diagnostics;

namespace AsyncIterTools.Internal;

/// <content>
/// The hand-over: a call's completion callback (or the source's completed move) posts its operation with
/// <see cref="Post"/>, which gives it to the parked consumer or queues it in <see cref="_completed"/>, in the order the
/// contract asks (with a limiter, a failure of the inputs after the calls that ended before it was read); the consumer
/// takes it with <see cref="Take"/>.
/// </content>
internal sealed partial class CompletionQueue<TArg, TResult>
{
    /// <summary>With a limiter: calls that have ended (<see cref="MarkEnded"/>) and are not posted yet, their leases going
    /// back. Guarded by <see cref="_lock"/>, as are the fields below.</summary>
    private int _endedUnposted;

    /// <summary>The last stamp <see cref="MarkEnded"/> gave a call (<see cref="Operation.EndStamp"/>): the order calls ended in.</summary>
    private long _endStamps;

    /// <summary>
    /// A failure of the inputs posted while calls that ended before it was read were still giving their leases back: it
    /// is delivered once the <see cref="_heldWaitsFor"/> of them stamped up to <see cref="_heldAfterStamp"/> are, and
    /// whatever is posted meanwhile (it ended after it) waits in <see cref="_heldBack"/> and is delivered behind it.
    /// </summary>
    private Operation? _heldInputFailure;

    private long _heldAfterStamp;

    private int _heldWaitsFor;

    private List<Operation>? _heldBack;

    /// <summary>Counts <paramref name="operation"/>, which the consumer has just been given, as taken: a call leaves the
    /// in-flight count (and the untaken failures if it failed); the source's move signal ends the pending move.</summary>
    private Operation Take(Operation operation)
    {
        if (IsMoveSignal(operation))
        {
            _moving = false;
            return operation;
        }

        _inFlight--;
        operation.IsDone = true;
        if (operation.Error is not null)
        {
            Interlocked.Decrement(ref _untakenFailures);
        }

        return operation;
    }

    /// <summary>Counts a call's failure, before its operation is posted (see <see cref="HasUntakenFailure"/>).</summary>
    private void NoteFailure() => Interlocked.Increment(ref _untakenFailures);

    /// <summary>Called (on any thread) by an operation's completion callback, as its last touch of the operation, or by the
    /// source's completed move with its signal. Once a <paramref name="failed"/> one is posted, the calls held back by
    /// <see cref="_stopped"/> may end (<see cref="_failurePosted"/>): their endings come after it. A failure of the inputs
    /// comes after the calls that ended before it was read, also those still giving their leases back, and before those
    /// that end after it (<see cref="_heldInputFailure"/>).</summary>
    private void Post(Operation operation, bool failed)
    {
        bool handOver;
        Operation first = operation;
        lock (_lock)
        {
            bool marked = operation.EndedBeforeCancel is not null && !operation.InputFailed;
            if (marked)
            {
                _endedUnposted--;
            }

            if (operation.InputFailed && _endedUnposted > 0)
            {
                _heldInputFailure = operation;
                _heldAfterStamp = _endStamps;
                _heldWaitsFor = _endedUnposted;
                return;
            }

            if (_heldInputFailure is { } held)
            {
                if (!marked || operation.EndStamp > _heldAfterStamp)
                {
                    (_heldBack ??= []).Add(operation);
                    return;
                }

                if (--_heldWaitsFor == 0)
                {
                    // The last call that ended before the failure: it, the failure, then what came after, in one go.
                    _heldInputFailure = null;
                    handOver = EnqueueLocked(operation);
                    _completed.Enqueue(held);
                    failed = true;
                    if (_heldBack is not null)
                    {
                        foreach (Operation after in _heldBack)
                        {
                            _completed.Enqueue(after);
                        }

                        _heldBack.Clear();
                    }
                }
                else
                {
                    handOver = EnqueueLocked(operation);
                }
            }
            else
            {
                handOver = EnqueueLocked(operation);
            }
        }

        if (handOver)
        {
            // Outside the lock, and on the pool's global queue: completions queued meanwhile on this thread are posted
            // before the consumer runs, so it takes them without parking again.
            _handOff = first;
            Compat.UnsafeQueue(this); // the queue itself is the work item: no allocation per hand-off
        }

        if (failed)
        {
            _failurePosted?.TrySetResult(true);
        }
    }

    /// <summary>Hands <paramref name="operation"/> to the parked consumer (true: the caller queues the hand-off, outside
    /// the lock) or queues it. Lock held.</summary>
    private bool EnqueueLocked(Operation operation)
    {
        if (_waiting)
        {
            // The consumer is parked, so the queue is empty: hand the operation over directly (order is kept).
            Debug.Assert(_completed.Count == 0, "A parked consumer implies an empty queue.");
            _waiting = false;
            return true;
        }

        _completed.Enqueue(operation);
        return false;
    }
}
