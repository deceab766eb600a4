using System.Diagnostics;

namespace AsyncIterTools.Internal;

/// <content>
/// The source's move (Map and MapUnordered): the pending <c>MoveNextAsync</c> of the source takes its place in the
/// completion order beside the calls, so a call that completes while the source waits for its next element is yielded
/// at once.
/// </content>
internal sealed partial class CompletionQueue<TArg, TResult>
{
    /// <summary>
    /// Stands in the completion order for the source's <c>MoveNextAsync</c> registered by <see cref="AwaitMove"/> (Map and
    /// MapUnordered): taken from <see cref="NextAsync"/> like a call's operation, but never started, counted or returned.
    /// Made on the first such move.
    /// </summary>
    private Operation? _moveSignal;

    /// <summary>The source's pending <c>MoveNextAsync</c> (see <see cref="AwaitMove"/>), until <see cref="TakeMove"/> reads it.</summary>
    private ValueTask<bool> _move;

    /// <summary>True from <see cref="AwaitMove"/> until <see cref="NextAsync"/> hands out <see cref="_moveSignal"/>.</summary>
    private bool _moving;

    /// <summary>Cached <see cref="OnMoveCompleted"/>, registered on each pending move.</summary>
    private Action? _onMoveCompleted;

    /// <summary>
    /// Lets the source's pending <paramref name="move"/> (its <c>MoveNextAsync</c>) race the calls in flight: once it
    /// completes, <see cref="NextAsync"/> hands out the move signal (<see cref="IsMoveSignal"/>) in completion order, and
    /// <see cref="TakeMove"/> gives its outcome. So a call that completes while the source waits for its next element is
    /// yielded at once rather than after that element. One move at a time.
    /// </summary>
    public void AwaitMove(ValueTask<bool> move)
    {
        Debug.Assert(!_moving, "One move at a time.");
        _moveSignal ??= new Operation(this);
        _move = move;
        _moving = true;

        // Bookkeeping, as a call's completion callback: it only posts the signal, on no caller's context.
        move.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_onMoveCompleted ??= OnMoveCompleted);
    }

    /// <summary>Whether <paramref name="operation"/>, taken from <see cref="NextAsync"/>, is the move signal rather than a call.</summary>
    public bool IsMoveSignal(Operation operation) => ReferenceEquals(operation, _moveSignal);

    /// <summary>After <see cref="NextAsync"/> handed out the move signal: the move's outcome (see <see cref="MoveOutcome"/>).</summary>
    public bool TakeMove()
    {
        ValueTask<bool> move = _move;
        _move = default;
        return MoveOutcome(move);
    }

    /// <summary>
    /// A completed move of the source: true for an item, false at its end; its failure is thrown as
    /// <see cref="SourceFailure"/> reports it.
    /// </summary>
    public bool MoveOutcome(ValueTask<bool> move)
    {
        try
        {
            return move.GetAwaiter().GetResult();
        }
        catch (Exception ex) when (_callerToken.IsCancellationRequested)
        {
            throw SourceFailure(ex);
        }
    }

    /// <summary>
    /// A failure of a source (its move or its disposal) as a lazy operator reports it: once the caller has cancelled, as
    /// the cancellation, whatever failed (the token rule of docs/asynciter.md), else as itself.
    /// </summary>
    public Exception SourceFailure(Exception failure) =>
        _callerToken.IsCancellationRequested ? new OperationCanceledException(_callerToken) : failure;

    /// <summary>
    /// The move completed: its signal joins the completion order, as a call's completion does (a parked consumer is
    /// resumed from the pool, never inside whatever completed the source's move).
    /// </summary>
    private void OnMoveCompleted()
    {
        bool failed = !_move.IsCompletedSuccessfully;
        if (failed)
        {
            _stopped = true;
        }

        Post(_moveSignal!, failed);
    }
}
