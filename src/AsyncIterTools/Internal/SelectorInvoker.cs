using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Threading.Channels;

namespace AsyncIterTools.Internal;

/// <summary>
/// Starts selector calls for Map and MapUnordered and reports each through a completion queue in the order they
/// finish. Single consumer: <see cref="Start"/>, <see cref="NextAsync"/> and <see cref="DrainAsync"/> are called by the
/// operator's iterator only; the calls' completions only write to the channel.
/// </summary>
internal sealed class SelectorInvoker<T, TResult>
{
    private readonly Func<T, CancellationToken, ValueTask<TResult>> _selector;

    /// <summary>Given to every selector call; cancelled when the operator fails, is disposed, or the caller cancels.</summary>
    private readonly CancellationToken _token;

    /// <summary>Every started call's slot is written here exactly once, when the call completes.</summary>
    private readonly Channel<Slot> _completions =
        Channel.CreateUnbounded<Slot>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = false });

    /// <summary>Slots given back through <see cref="Return"/>; consumer-only, so no lock.</summary>
    private readonly Stack<Slot> _free = new();

    /// <summary>Calls started and not yet read back from <see cref="_completions"/>.</summary>
    private int _inFlight;

    public SelectorInvoker(Func<T, CancellationToken, ValueTask<TResult>> selector, CancellationToken token)
    {
        _selector = selector;
        _token = token;
    }

    /// <summary>Gets how many selector calls are in flight (started, completion not yet read).</summary>
    public int InFlight => _inFlight;

    /// <summary>Invokes the selector for <paramref name="item"/>; returns the slot its outcome will be stored in.</summary>
    public Slot Start(T item)
    {
        Slot slot = _free.Count > 0 ? _free.Pop() : new Slot(this);
        _inFlight++;
        ValueTask<TResult> pending;
        try
        {
            pending = _selector(item, _token);
        }
        catch (Exception ex)
        {
            slot.Error = ExceptionDispatchInfo.Capture(ex);
            Post(slot);
            return slot;
        }

        slot.Await(pending);
        return slot;
    }

    /// <summary>
    /// Takes back a slot the consumer is done with: its completion was read by <see cref="NextAsync"/> and its result
    /// taken. It is reused by a later <see cref="Start"/>, so none is allocated once the window has filled.
    /// </summary>
    public void Return(Slot slot)
    {
        Debug.Assert(slot.IsDone, "Only a slot whose completion was read can be reused.");
        slot.Reset();
        _free.Push(slot);
    }

    /// <summary>Waits for the next selector call to complete (in completion order) and marks its slot done.</summary>
    public ValueTask<Slot> NextAsync()
    {
        Debug.Assert(_inFlight > 0, "No call is in flight.");

        // Synchronous when a completion is already queued (the common case under load): no async method runs.
        return _completions.Reader.TryRead(out Slot? slot) ? new ValueTask<Slot>(Take(slot)) : NextSlowAsync();
    }

    private async ValueTask<Slot> NextSlowAsync() => Take(await _completions.Reader.ReadAsync());

    private Slot Take(Slot slot)
    {
        _inFlight--;
        slot.IsDone = true;
        return slot;
    }

    /// <summary>Awaits every call still in flight; their outcomes are dropped.</summary>
    public async ValueTask DrainAsync()
    {
        while (_inFlight > 0)
        {
            _ = await NextAsync();
        }
    }

    private void Post(Slot slot)
    {
        bool written = _completions.Writer.TryWrite(slot);
        Debug.Assert(written, "The completion channel is unbounded and never completed.");
    }

    /// <summary>
    /// The outcome of one selector call. Written by the call before it is posted; read by the consumer after. Reused
    /// (see <see cref="Return"/>): its continuation delegate is created once, so awaiting a call allocates nothing here.
    /// </summary>
    internal sealed class Slot
    {
        private readonly SelectorInvoker<T, TResult> _owner;

        /// <summary>Cached <see cref="OnCompleted"/>, registered directly on the pending call (no async state machine).</summary>
        private readonly Action _onCompleted;

        /// <summary>The call being awaited; default once its outcome is stored.</summary>
        private ValueTask<TResult> _pending;

        public Slot(SelectorInvoker<T, TResult> owner)
        {
            _owner = owner;
            _onCompleted = OnCompleted;
        }

        public TResult Result { get; private set; } = default!;

        public ExceptionDispatchInfo? Error { get; set; }

        /// <summary>Gets or sets a value indicating whether the consumer has read this slot's completion.</summary>
        public bool IsDone { get; set; }

        public void Await(ValueTask<TResult> pending)
        {
            if (pending.IsCompleted)
            {
                _pending = pending;
                OnCompleted();
                return;
            }

            _pending = pending;

            // Plain GetAwaiter (the library's ConfigureAwait policy); the callback only stores the outcome and posts.
            pending.GetAwaiter().UnsafeOnCompleted(_onCompleted);
        }

        public void Reset()
        {
            Result = default!;
            Error = null;
            IsDone = false;
        }

        // Never throws: the outcome goes into the slot.
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
            }

            _owner.Post(this);
        }
    }
}
