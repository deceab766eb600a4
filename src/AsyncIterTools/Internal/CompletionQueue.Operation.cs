namespace AsyncIterTools.Internal;

/// <content>One call and its outcome, pooled by the queue.</content>
internal sealed partial class CompletionQueue<TArg, TResult>
{
    /// <summary>
    /// One call: what it was started with, and its outcome once complete. Written by the completion callback before it is
    /// posted, read by the consumer after it is taken. Its callback delegate is created once and reused.
    /// </summary>
    internal sealed class Operation
    {
        private readonly CompletionQueue<TArg, TResult> _owner;

        /// <summary>Cached <see cref="OnCompleted"/>, registered directly on the pending call (no async state machine).</summary>
        private readonly Action _onCompleted;

        /// <summary>The call being awaited; default once its outcome is stored.</summary>
        private ValueTask<TResult> _pending;

        public Operation(CompletionQueue<TArg, TResult> owner)
        {
            _owner = owner;
            _onCompleted = OnCompleted;
        }

        /// <summary>Gets what the call was started with.</summary>
        public TArg Arg { get; private set; } = default!;

        /// <summary>Gets the call's start order: 0 for the queue's first call, 1 for the next, and so on.</summary>
        public int Index { get; private set; }

        /// <summary>Gets the call's value, when it succeeded.</summary>
        public TResult Result { get; private set; } = default!;

        /// <summary>Gets the call's failure (or cancellation), if any; observed, so it never goes unobserved.</summary>
        public ExceptionDispatchInfo? Error { get; private set; }

        /// <summary>
        /// Gets a value indicating whether the call failed after the calls' token was cancelled (by the caller, a deadline
        /// or an earlier failure): its failure may be that cancellation's doing, so the operator reports the cancellation's
        /// cause instead. A call that failed before is a failure of its own, whatever came after.
        /// </summary>
        public bool FailedAfterCancel => Error is not null && EndedAfterCancel;

        /// <summary>
        /// Gets a value indicating whether the call ended (succeeded or failed) after the calls' token was cancelled: a
        /// value that came after a deadline is not counted as having come before it.
        /// </summary>
        public bool EndedAfterCancel { get; private set; }

        /// <summary>Gets or sets whether the calls were not cancelled yet as the call ended, when that was decided before
        /// its completion (a limiter's lease is released in between); null to decide at completion.</summary>
        public bool? EndedBeforeCancel { get; set; }

        /// <summary>Gets or sets a value indicating whether the call was counted in <see cref="OperatorMetrics.InFlight"/>
        /// as it started; the completion callback then counts it down.</summary>
        public bool Metered { get; set; }

        /// <summary>
        /// Gets a value indicating whether the call failed because of the limiter, not of its own: the limiter refused its
        /// lease (no <c>RetryAfter</c>) or threw, so the call never ran, or the lease's release failed after the call
        /// succeeded. The operator fails as a whole, even where a failed call would not stop it.
        /// </summary>
        public bool LimiterFailed { get; internal set; }

        /// <summary>
        /// Gets a value indicating whether this is no call but a failure of the inputs (reading them failed, or a
        /// <see langword="null"/> element), posted in the completion order by <see cref="StartMore"/>: the operator fails
        /// as a whole.
        /// </summary>
        public bool InputFailed { get; internal set; }

        /// <summary>Gets or sets the order in which the call ended among those marked by <c>MarkEnded</c> (with a limiter);
        /// read only once it is marked (<see cref="EndedBeforeCancel"/> set), so never reset.</summary>
        public long EndStamp { get; set; }

        /// <summary>Gets a value indicating whether the consumer has taken this operation from the queue.</summary>
        public bool IsDone { get; internal set; }

        /// <summary>Returns the value, or throws the failure itself (never wrapped).</summary>
        public TResult GetResult()
        {
            Error?.Throw();
            return Result;
        }

        internal void Await(TArg arg, int index, ValueTask<TResult> pending)
        {
            Arg = arg;
            Index = index;
            _pending = pending;
            if (pending.IsCompleted)
            {
                OnCompleted();
                return;
            }

            // Bookkeeping never captures the caller's context: the callback only stores the outcome and posts.
            pending.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_onCompleted);
        }

        internal void Reset()
        {
            Arg = default!;
            Result = default!;
            Error = null;
            EndedBeforeCancel = null;
            LimiterFailed = InputFailed = EndedAfterCancel = IsDone = false;
        }

        // The outcome goes into the operation, the call is counted down, and the operation is posted (its last touch):
        // counted down before the operator can see it end. A metrics listener that throws as it is counted down (the only
        // way out of here) cannot keep the call from being posted, which the operator's drain waits for: its exception
        // is thrown after the post. Inline, from Start, to the operator; on the pool it is unhandled there
        // (docs/observability.md).
        private void OnCompleted()
        {
            ValueTask<TResult> pending = _pending;
            _pending = default;
            try
            {
                Result = pending.GetAwaiter().GetResult();
            }
            catch (Exception ex)
            {
                Error = ExceptionDispatchInfo.Capture(ex);
                _owner.NoteFailure();
            }

            EndedAfterCancel = EndedBeforeCancel is { } before ? !before : _owner.IsCancelled;

            ExceptionDispatchInfo? listenerFailure = null;
            if (Metered)
            {
                Metered = false;
                try
                {
                    OperatorMetrics.InFlight.Add(-1, new KeyValuePair<string, object?>(MetricNames.OperatorTag, _owner._operatorName));
                }
                catch (Exception ex)
                {
                    listenerFailure = ExceptionDispatchInfo.Capture(ex);
                }
            }

            _owner.Post(this, failed: Error is not null);
            listenerFailure?.Throw();
        }
    }
}
