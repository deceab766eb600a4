using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks.Sources;

namespace AsyncIterTools.Internal;

/// <summary>
/// The engine behind Merge. Each started source is a <see cref="Lane"/> with at most one <c>MoveNextAsync</c>
/// outstanding; a lane whose <c>MoveNextAsync</c> completed joins the FIFO <see cref="_ready"/> queue, and the consumer
/// takes lanes from its head. A lane whose item was just yielded is pumped again only when the consumer asks for the
/// next item, and a synchronously completing lane re-joins at the back of the queue: that round-robin hand-off is what
/// keeps a fast synchronous source from starving the others.
/// </summary>
/// <remarks>
/// Consumer-side members (<see cref="StartMore"/>, <see cref="NextAsync"/>, <see cref="Pump"/>, <see cref="RetireAsync"/>,
/// <see cref="ShutdownAsync"/>, <see cref="Fail"/>) are called by the iterator only, one at a time. Lane completion
/// callbacks, on any thread, only call <see cref="Enqueue"/>. Waiting allocates nothing: the consumer parks on a
/// reusable <see cref="ManualResetValueTaskSourceCore{TResult}"/>.
/// </remarks>
internal sealed class MergeHub<T> : IValueTaskSource<MergeHub<T>.Lane?>
{
    /// <summary>Guards <see cref="_ready"/> and <see cref="_waiting"/>; never held while user code runs.</summary>
    private readonly object _lock = new();

    /// <summary>Lanes whose <c>MoveNextAsync</c> has completed and that the consumer has not taken yet, in completion order.</summary>
    private readonly Queue<Lane> _ready = new();

    /// <summary>Lanes started and not yet disposed (consumer side only).</summary>
    private readonly List<Lane> _active = new();

    /// <summary>The sources not yet started; enumerated lazily by <see cref="StartMore"/>; disposed at shutdown.</summary>
    private readonly IEnumerator<IAsyncEnumerable<T>> _sources;

    /// <summary>Upper bound of <see cref="_active"/>.Count.</summary>
    private readonly int _maxConcurrency;

    /// <summary>Linked to the consumer's token; every source gets its token; cancelled on failure and at shutdown.</summary>
    private readonly CancellationTokenSource _cts;

    /// <summary>
    /// The consumer's parking spot. Continuations run asynchronously so that a source completing on its own thread never
    /// runs the consumer's loop (and the next source's MoveNextAsync) inline.
    /// </summary>
    private ManualResetValueTaskSourceCore<Lane?> _waiter = new() { RunContinuationsAsynchronously = true };

    /// <summary>True while the consumer is parked on <see cref="_waiter"/>; then <see cref="_ready"/> is empty.</summary>
    private bool _waiting;

    /// <summary>Lanes with a <c>MoveNextAsync</c> outstanding or completed but not yet taken by the consumer.</summary>
    private int _outstanding;

    /// <summary>True once <see cref="_sources"/> is exhausted (or failed).</summary>
    private bool _sourcesDone;

    /// <summary>The first failure: of a source, of its disposal, or of enumerating the sources.</summary>
    private ExceptionDispatchInfo? _failure;

    public MergeHub(IEnumerable<IAsyncEnumerable<T>> sources, int maxConcurrency, CancellationToken cancellationToken)
    {
        _maxConcurrency = maxConcurrency;
        _cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _sources = sources.GetEnumerator();
    }

    /// <summary>Gets a value indicating whether a failure was recorded.</summary>
    public bool HasFailed => _failure is not null;

    /// <summary>Starts sources until <c>maxConcurrency</c> are active or none are left.</summary>
    public void StartMore()
    {
        while (!_sourcesDone && _failure is null && _active.Count < _maxConcurrency)
        {
            IAsyncEnumerator<T> enumerator;
            try
            {
                if (!_sources.MoveNext())
                {
                    _sourcesDone = true;
                    return;
                }

                IAsyncEnumerable<T> source = _sources.Current
                    ?? throw new ArgumentException("The sequence of sources contains a null element.", "sources");
                enumerator = source.GetAsyncEnumerator(_cts.Token);
            }
            catch (Exception ex)
            {
                _sourcesDone = true;
                Fail(ex);
                return;
            }

            var lane = new Lane(this, enumerator);
            _active.Add(lane);
            Pump(lane);
        }
    }

    /// <summary>Asks <paramref name="lane"/> for its next item; the lane reappears from <see cref="NextAsync"/> when it has it.</summary>
    public void Pump(Lane lane)
    {
        _outstanding++;
        lane.Pump();
    }

    /// <summary>
    /// Takes the next lane whose <c>MoveNextAsync</c> completed, waiting if there is none; returns null when no lane is
    /// outstanding (everything started has finished).
    /// </summary>
    public ValueTask<Lane?> NextAsync()
    {
        lock (_lock)
        {
            if (_ready.Count > 0)
            {
                _outstanding--;
                return new ValueTask<Lane?>(_ready.Dequeue());
            }

            if (_outstanding == 0)
            {
                return new ValueTask<Lane?>((Lane?)null);
            }

            _waiting = true;
        }

        return new ValueTask<Lane?>(this, _waiter.Version);
    }

    /// <summary>Disposes a finished lane and starts the next source, if any.</summary>
    public async ValueTask RetireAsync(Lane lane)
    {
        _active.Remove(lane);
        try
        {
            await lane.Enumerator.DisposeAsync();
        }
        catch (Exception ex)
        {
            Fail(ex);
            return;
        }

        StartMore();
    }

    /// <summary>Records the first failure and cancels every source.</summary>
    public void Fail(Exception exception)
    {
        _failure ??= ExceptionDispatchInfo.Capture(exception);
        _cts.CancelQuietly();
    }

    /// <summary>Rethrows the first recorded failure, if any.</summary>
    public void ThrowIfFailed() => _failure?.Throw();

    /// <summary>
    /// Cancels the sources, waits for every outstanding <c>MoveNextAsync</c> (observing and dropping its outcome), then
    /// disposes each active source once and the sequence of sources. Disposal failures are recorded if nothing failed before.
    /// </summary>
    public async ValueTask ShutdownAsync()
    {
        _cts.CancelQuietly();
        while (await NextAsync() is { } lane)
        {
            try
            {
                _ = lane.GetResult();
            }
            catch (Exception)
            {
                // Outcomes after shutdown began (typically cancellation) are dropped.
            }
        }

        foreach (Lane lane in _active)
        {
            try
            {
                await lane.Enumerator.DisposeAsync();
            }
            catch (Exception ex)
            {
                _failure ??= ExceptionDispatchInfo.Capture(ex);
            }
        }

        _active.Clear();
        try
        {
            _sources.Dispose();
        }
        catch (Exception ex)
        {
            _failure ??= ExceptionDispatchInfo.Capture(ex);
        }

        _cts.Dispose();
    }

    /// <summary>Called (on any thread) when <paramref name="lane"/>'s <c>MoveNextAsync</c> completes.</summary>
    private void Enqueue(Lane lane)
    {
        lock (_lock)
        {
            if (!_waiting)
            {
                _ready.Enqueue(lane);
                return;
            }

            // The consumer is parked, so the queue is empty: hand the lane over directly (FIFO is preserved).
            Debug.Assert(_ready.Count == 0, "A parked consumer implies an empty ready queue.");
            _waiting = false;
        }

        // Outside the lock: completing the waiter schedules the consumer's continuation.
        _waiter.SetResult(lane);
    }

    Lane? IValueTaskSource<Lane?>.GetResult(short token)
    {
        Lane? lane = _waiter.GetResult(token);
        _waiter.Reset();
        _outstanding--;
        return lane;
    }

    ValueTaskSourceStatus IValueTaskSource<Lane?>.GetStatus(short token) => _waiter.GetStatus(token);

    void IValueTaskSource<Lane?>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _waiter.OnCompleted(continuation, state, token, flags);

    /// <summary>One active source: its enumerator and its single outstanding <c>MoveNextAsync</c>.</summary>
    internal sealed class Lane
    {
        private readonly MergeHub<T> _hub;

        /// <summary>Cached so that re-arming a lane allocates nothing.</summary>
        private readonly Action _onCompleted;

        /// <summary>The outstanding (or completed, not yet consumed) <c>MoveNextAsync</c>.</summary>
        private ValueTask<bool> _pending;

        /// <summary>An exception <c>MoveNextAsync</c> threw synchronously instead of returning a task.</summary>
        private Exception? _syncError;

        public Lane(MergeHub<T> hub, IAsyncEnumerator<T> enumerator)
        {
            _hub = hub;
            Enumerator = enumerator;
            _onCompleted = () => _hub.Enqueue(this);
        }

        public IAsyncEnumerator<T> Enumerator { get; }

        public void Pump()
        {
            try
            {
                _pending = Enumerator.MoveNextAsync();
            }
            catch (Exception ex)
            {
                _syncError = ex;
                _hub.Enqueue(this);
                return;
            }

            if (_pending.IsCompleted)
            {
                _hub.Enqueue(this);
            }
            else
            {
                // Plain GetAwaiter (the library's ConfigureAwait policy); the callback only enqueues the lane.
                _pending.GetAwaiter().UnsafeOnCompleted(_onCompleted);
            }
        }

        /// <summary>Consumes the completed <c>MoveNextAsync</c>: true with an item, false at the end; throws its failure.</summary>
        public bool GetResult()
        {
            if (_syncError is { } error)
            {
                _syncError = null;
                ExceptionDispatchInfo.Capture(error).Throw();
            }

            ValueTask<bool> pending = _pending;
            _pending = default;
            return pending.GetAwaiter().GetResult();
        }
    }
}
