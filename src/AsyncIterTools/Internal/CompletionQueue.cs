using System.Diagnostics;
using System.Threading.RateLimiting;
using System.Threading.Tasks.Sources;

namespace AsyncIterTools.Internal;

/// <summary>
/// The one completion mechanism under the concurrent operators (Map, MapUnordered, GatherAsync, GatherSettledAsync,
/// AsCompleted, Merge): every asynchronous call they make starts in <see cref="Start"/> and ends when the operator's
/// consumer takes it back from <see cref="NextAsync"/>, in completion order.
/// </summary>
/// <typeparam name="TArg">What a call is started with: an element to project, a work factory, a task, a source's enumerator.</typeparam>
/// <typeparam name="TResult">What a call completes with.</typeparam>
/// <remarks>
/// <para>
/// Single consumer: every member except the operations' completion callbacks is called by one logical flow at a time
/// (the operator's iterator or gathering method). A completion callback only stores the outcome in its
/// <see cref="Operation"/> and hands the operation over (<see cref="Post"/>): to the parked consumer, or to
/// <see cref="_completed"/>.
/// </para>
/// <para>
/// Context policy. The completion callback is bookkeeping: it is registered with <c>ConfigureAwait(false)</c> and runs
/// on whichever thread completes the call, never posted to the caller's <see cref="SynchronizationContext"/>. The
/// consumer, which goes on to call user code (the next selector, the next work factory, the next
/// <c>MoveNextAsync</c>), is resumed asynchronously (never inline inside a completion) and on the caller's context
/// when it had to wait: one post per wait, none per completion.
/// </para>
/// <para>
/// The operations are pooled: a taken operation goes back to <see cref="_free"/> through <see cref="Return"/>, and the
/// consumer parks on this queue itself (a reusable <see cref="ManualResetValueTaskSourceCore{TResult}"/>), so once the
/// window has filled, starting, completing and waiting allocate nothing here.
/// </para>
/// <para>
/// Limiter (the operators' <c>RateLimiter</c> overloads). With a <see cref="_limiter"/>, a started call first acquires
/// one lease (in start order), runs while holding it and disposes it when it ends, whether it succeeds, fails or is
/// cancelled; it is in flight, and counts against the operator's concurrency limit, from its start, waiting for the
/// lease included, so the source is still read only as slots free up. A lease refused with <c>RetryAfter</c> metadata
/// is asked for again after that delay; one refused without it fails the call, which never runs, with an
/// <see cref="InvalidOperationException"/> (<see cref="Operation.LimiterFailed"/> tells it from a failure of the call).
/// The queue holds no more leases than it has calls running, and none once <see cref="DrainAsync"/> returns (a lease that
/// is <see cref="IAsyncDisposable"/> is released with <c>DisposeAsync</c>, awaited). A lease granted after a failure
/// (<see cref="_stopped"/>) starts nothing; a lease's <c>LEASE_LOST</c> token is linked into its call's token
/// (CompletionQueue.Limiter.cs).
/// </para>
/// </remarks>
internal sealed partial class CompletionQueue<TArg, TResult> : IValueTaskSource<CompletionQueue<TArg, TResult>.Operation>, IThreadPoolWorkItem, IDisposable
{
    /// <summary>The operator's name (<c>Map</c>, ...), the <c>asynctools.operator</c> tag of its in-flight count.</summary>
    private readonly string _operatorName;

    /// <summary>Starts one call; a synchronous throw counts as a call that failed.</summary>
    private readonly Func<TArg, CancellationToken, ValueTask<TResult>> _call;

    /// <summary>Linked to the caller's token; its token is given to every call; cancelled by <see cref="Cancel"/>.</summary>
    private readonly CancellationTokenSource _cts;

    /// <summary>The caller's token. A call that watches it itself is cancelled before <see cref="_cts"/> (a token runs its
    /// callbacks newest first, and the link was registered before any call started), so both are asked whether a failure
    /// came after a cancellation.</summary>
    private readonly CancellationToken _callerToken;

    /// <summary>Grants the lease each call holds while it runs, or null for none.</summary>
    private readonly RateLimiter? _limiter;

    /// <summary>The clock of the waits before asking <see cref="_limiter"/> again (a refused lease's <c>RetryAfter</c>).</summary>
    private readonly TimeProvider _timeProvider;

    /// <summary>Whether a failed call fails the operator (all but GatherSettledAsync): then, with a limiter, a lease granted
    /// after a failure starts nothing (<see cref="_stopped"/>).</summary>
    private readonly bool _stopsAtFailure;

    /// <summary>
    /// Set (on any thread) once the operator is bound to fail: a call failed (when <see cref="_stopsAtFailure"/>), the
    /// source's move failed, or a lease was refused. A lease granted afterwards starts nothing, also before the consumer
    /// has taken the failure and cancelled the calls; a failing call sets it before its lease goes back.
    /// </summary>
    private volatile bool _stopped;

    /// <summary>With a limiter: completed once a failed call (or a failed source move) has been posted; a call whose
    /// lease came after <see cref="_stopped"/> waits for it, so its own ending is posted after that failure.</summary>
    private readonly TaskCompletionSource<bool>? _failurePosted;

    /// <summary>Guards <see cref="_completed"/> and <see cref="_waiting"/>; held for a few instructions, never around user code.</summary>
    private readonly Lock _lock = new();

    /// <summary>Completed operations the consumer has not taken yet, in completion order.</summary>
    private readonly Queue<Operation> _completed = new();

    /// <summary>Operations given back through <see cref="Return"/>; consumer-only, so no lock.</summary>
    private readonly Stack<Operation> _free = new();

    /// <summary>Calls started and not yet taken from <see cref="_completed"/>.</summary>
    private int _inFlight;

    /// <summary>How many calls were started; the next one gets this <see cref="Operation.Index"/>.</summary>
    private int _started;

    /// <summary>Calls that failed and that the consumer has not taken yet; while there are any, nothing new starts.</summary>
    private int _untakenFailures;

    /// <summary>True once <see cref="StartMore"/> found its inputs exhausted (or failing): it reads them no more.</summary>
    private bool _inputsEnded;

    /// <summary>True once <see cref="StartMore"/> stopped at a <see langword="null"/> element (not at a failure of the
    /// inputs themselves): the inputs after it can still be read.</summary>
    public bool StoppedAtNullElement { get; private set; }

    /// <summary>True once <see cref="StartMore"/> has read its inputs to their end (not stopped by a cancellation or failure).</summary>
    public bool InputsExhausted { get; private set; }

    /// <summary>The first failure reported through <see cref="Fail(Exception)"/>.</summary>
    private ExceptionDispatchInfo? _failure;

    /// <param name="operatorName">The operator (<c>Map</c>, <c>MapUnordered</c>, <c>GatherAsync</c>, ...), for metrics.</param>
    /// <param name="call">Starts one call.</param>
    /// <param name="cancellationToken">The caller's token, which cancels every call.</param>
    /// <param name="limiter">Grants one lease per call, held while it runs; null for none.</param>
    /// <param name="timeProvider">The clock of the waits after a refused lease's <c>RetryAfter</c>; null for the system clock.</param>
    /// <param name="stopsAtFailure">Whether a failed call fails the operator (false for GatherSettledAsync).</param>
    public CompletionQueue(
        string operatorName,
        Func<TArg, CancellationToken, ValueTask<TResult>> call,
        CancellationToken cancellationToken,
        RateLimiter? limiter = null,
        TimeProvider? timeProvider = null,
        bool stopsAtFailure = true)
    {
        _operatorName = operatorName;
        _stopsAtFailure = stopsAtFailure;
        _call = call;
        _cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _callerToken = cancellationToken;
        _limiter = limiter;
        _failurePosted = limiter is null ? null : new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        _timeProvider = timeProvider ?? TimeProvider.System;
    }

    /// <summary>Gets a value indicating whether the calls' token, or the caller's, is cancelled; readable after
    /// <see cref="Dispose"/>, unlike <see cref="Token"/>.</summary>
    public bool IsCancelled => _cts.IsCancellationRequested || _callerToken.IsCancellationRequested;

    /// <summary>Gets the token every call receives (and that the operator gives its sources).</summary>
    public CancellationToken Token => _cts.Token;

    /// <summary>Gets how many calls are in flight: started, and not yet taken by <see cref="NextAsync"/>.</summary>
    public int InFlight => _inFlight;

    /// <summary>Gets a value indicating whether a source move registered by <see cref="AwaitMove"/> has not been taken yet.</summary>
    public bool IsMoving => _moving;

    /// <summary>
    /// Gets a value indicating whether a call has failed (or was cancelled) and the consumer has not taken it yet. Nothing
    /// new is started meanwhile (<see cref="StartMore"/>, Map's fill): the operators that stop at a failure then start
    /// nothing after it, also when it was thrown synchronously by the call just started; the others start again once
    /// they have taken it.
    /// </summary>
    public bool HasUntakenFailure => Volatile.Read(ref _untakenFailures) != 0;

    /// <summary>Gets the first failure reported through <see cref="Fail(Exception)"/>, if any.</summary>
    public ExceptionDispatchInfo? Failure => _failure;

    /// <summary>Starts a call with <paramref name="arg"/>; returns the operation its outcome will be stored in.</summary>
    public Operation Start(TArg arg)
    {
        Operation operation = _free.Count > 0 ? _free.Pop() : new Operation(this);
        if (OperatorMetrics.InFlight.Enabled)
        {
            // Counted down by the completion callback: only calls counted up (someone listened as they started).
            // Before the call counts as in flight: a listener that throws fails the start, not the drain that waits for it.
            OperatorMetrics.InFlight.Add(1, new KeyValuePair<string, object?>(MetricNames.OperatorTag, _operatorName));
            operation.Metered = true;
        }

        _inFlight++;

        ValueTask<TResult> pending;
        try
        {
            pending = _limiter is null ? _call(arg, _cts.Token) : CallWithLeaseAsync(operation, arg, _cts.Token);
        }
        catch (Exception ex)
        {
            pending = new ValueTask<TResult>(Task.FromException<TResult>(ex));
        }

        operation.Await(arg, _started++, pending);
        return operation;
    }

    /// <summary>
    /// Starts a call for each next element of <paramref name="inputs"/>, in order, until <paramref name="maxConcurrency"/>
    /// calls are in flight, the inputs end, or the queue is cancelled. A failure to read the inputs, or a
    /// <see langword="null"/> element (<see cref="Arguments.NullElement"/>, naming <paramref name="inputsName"/>), takes
    /// its place in the completion order as a call that failed then (<see cref="Operation.InputFailed"/>), behind the
    /// calls that completed before it; after that, or after the end, the inputs are not read again.
    /// While a failed call waits to be taken (<see cref="HasUntakenFailure"/>) nothing new starts, unless
    /// <paramref name="startsWork"/> is false: a call then only watches work already running (AsCompleted's tasks),
    /// and every input is read, also once cancelled, so that every task's failure is observed.
    /// </summary>
    public void StartMore(IEnumerator<TArg> inputs, int maxConcurrency, string inputsName, bool startsWork = true)
    {
        while (!_inputsEnded && _inFlight < maxConcurrency && !(startsWork && HasUntakenFailure))
        {
            TArg arg;
            try
            {
                if (startsWork && _cts.IsCancellationRequested)
                {
                    _inputsEnded = true;
                    return;
                }

                if (!inputs.MoveNext())
                {
                    _inputsEnded = true;
                    InputsExhausted = true;
                    return;
                }

                arg = inputs.Current;
            }
            catch (Exception ex)
            {
                _inputsEnded = true;
                PostInputFailure(ex);
                return;
            }

            if (arg is null)
            {
                _inputsEnded = true;
                StoppedAtNullElement = true;
                PostInputFailure(Arguments.NullElement(inputsName));
                return;
            }

            _ = Start(arg);
        }
    }

    /// <summary>
    /// Posts a failure of the inputs as a call that failed at once: the consumer takes the calls that completed before it
    /// first, as it would before any call's failure, and then fails the operator with it (a failure of the inputs is
    /// never an outcome of a piece of work, not even in GatherSettledAsync). Nothing starts after it. Reading the inputs is
    /// not work the calls' token cancels, so their failure counts as before any cancellation or deadline (Merge, whose
    /// inputs open sources with that token, reads a failure to open by the token rule, <see cref="SourceFailure"/>).
    /// </summary>
    private void PostInputFailure(Exception failure)
    {
        _stopped = true;
        Operation operation = _free.Count > 0 ? _free.Pop() : new Operation(this);
        operation.InputFailed = true;
        operation.EndedBeforeCancel = true;
        _inFlight++;
        operation.Await(default!, _started++, new ValueTask<TResult>(Task.FromException<TResult>(failure))); // Post may hold it
    }

    /// <summary>
    /// Takes back an operation the consumer is done with (taken by <see cref="NextAsync"/>, outcome read); a later
    /// <see cref="Start"/> reuses it.
    /// </summary>
    public void Return(Operation operation)
    {
        Debug.Assert(operation.IsDone, "Only a taken operation can be reused.");
        operation.Reset();
        _free.Push(operation);
    }

    /// <summary>Disposes the inputs <see cref="StartMore"/> read (after the drain) and returns the failure of their
    /// disposal, if any: the operator throws it last, when nothing came before it (a failure, the caller's cancellation,
    /// a deadline), as an <c>await foreach</c> or a <c>using</c> would let the first exception through.</summary>
    public static ExceptionDispatchInfo? DisposeInputs(IEnumerator<TArg> inputs)
    {
        try
        {
            inputs.Dispose();
            return null;
        }
        catch (Exception ex)
        {
            return ExceptionDispatchInfo.Capture(ex);
        }
    }

    /// <summary>Records <paramref name="failure"/> if it is the first, then cancels (<see cref="Cancel"/>).</summary>
    public void Fail(Exception failure) => Fail(ExceptionDispatchInfo.Capture(failure));

    /// <summary>Records <paramref name="failure"/> if it is the first, then cancels (<see cref="Cancel"/>).</summary>
    public void Fail(ExceptionDispatchInfo failure)
    {
        _failure ??= failure;
        Cancel();
    }

    /// <summary>Cancels the calls in flight; <see cref="StartMore"/> starts nothing after this.</summary>
    public void Cancel() => _cts.CancelQuietly();

    /// <summary>
    /// Awaits every call still in flight, and the source's move if one is pending (after <see cref="Cancel"/> they
    /// observe cancellation); drops their outcomes, as the consumer has stopped taking them, except, when
    /// <paramref name="keepFailureBeforeCancel"/>, a call's failure that came before the calls were cancelled (one whose
    /// post was held up, as by the release of a limiter's lease): the first such is recorded (<see cref="Fail(ExceptionDispatchInfo)"/>).
    /// </summary>
    public async ValueTask DrainAsync(bool keepFailureBeforeCancel = false)
    {
        while (_inFlight > 0 || _moving)
        {
            Operation operation = await NextAsync();
            if (!IsMoveSignal(operation))
            {
                if (keepFailureBeforeCancel && operation.Error is { } error && !operation.FailedAfterCancel)
                {
                    Fail(error);
                }

                Return(operation);
                continue;
            }

            try
            {
                _ = TakeMove();
            }
            catch (Exception)
            {
                // Dropped like a call's outcome: the source's move ended after the operator stopped for another reason.
            }
        }
    }

    /// <summary>Disposes the linked token source, unregistering it from the caller's token.</summary>
    public void Dispose() => _cts.Dispose();
}
