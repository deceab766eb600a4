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
        var slot = new Slot();
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

        if (pending.IsCompletedSuccessfully)
        {
            slot.Result = pending.Result;
            Post(slot);
        }
        else
        {
            _ = CompleteAsync(pending, slot);
        }

        return slot;
    }

    /// <summary>Waits for the next selector call to complete (in completion order) and marks its slot done.</summary>
    public async ValueTask<Slot> NextAsync()
    {
        Debug.Assert(_inFlight > 0, "No call is in flight.");
        if (!_completions.Reader.TryRead(out Slot? slot))
        {
            slot = await _completions.Reader.ReadAsync();
        }

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

    // Never faults: the outcome goes into the slot, so the discarded task can raise no unobserved exception.
    private async Task CompleteAsync(ValueTask<TResult> pending, Slot slot)
    {
        try
        {
            slot.Result = await pending;
        }
        catch (Exception ex)
        {
            slot.Error = ExceptionDispatchInfo.Capture(ex);
        }

        Post(slot);
    }

    private void Post(Slot slot)
    {
        bool written = _completions.Writer.TryWrite(slot);
        Debug.Assert(written, "The completion channel is unbounded and never completed.");
    }

    /// <summary>The outcome of one selector call. Written by the call before it is posted; read by the consumer after.</summary>
    internal sealed class Slot
    {
        public TResult Result { get; set; } = default!;

        public ExceptionDispatchInfo? Error { get; set; }

        /// <summary>Gets or sets a value indicating whether the consumer has read this slot's completion.</summary>
        public bool IsDone { get; set; }
    }
}
