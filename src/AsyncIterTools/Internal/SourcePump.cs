using System.Diagnostics;
using System.Threading.Channels;

namespace AsyncIterTools.Internal;

/// <summary>
/// Reads a source ahead on its own task into a bounded channel (Prefetch and the time-based Batch). Each item is
/// stamped with the time it was read when a clock is given.
/// </summary>
/// <remarks>
/// The producer never faults: the source's failure is kept in <see cref="_failure"/>, written before the channel is
/// completed, so a reader that saw the completion sees it too. <see cref="DisposeAsync"/> stops the producer (its
/// token is cancelled, which also ends a blocked write) and awaits it, after which the source has been disposed; a
/// failure of the source's own disposal that the reader never saw (it stopped early) is thrown from there. Both keep
/// the lazy operators' token rule: once the consumer's token is cancelled, the enumeration ends as the cancellation,
/// whatever the source did meanwhile (its end, its failure, its disposal's failure).
/// </remarks>
internal sealed class SourcePump<T> : IAsyncDisposable
{
    /// <summary>The read-ahead buffer; single writer (the producer) and single reader (the operator).</summary>
    private readonly Channel<Entry> _channel;

    /// <summary>Linked to the consumer's token; given to the source; cancelled by <see cref="DisposeAsync"/>.</summary>
    private readonly CancellationTokenSource _cts;

    /// <summary>The consumer's token (see the token rule in the remarks).</summary>
    private readonly CancellationToken _callerToken;

    /// <summary>Stamps items with their read time; null when the operator needs no timestamps.</summary>
    private readonly TimeProvider? _clock;

    /// <summary>The producer; <see cref="Task.CompletedTask"/> until <see cref="Start"/>.</summary>
    private Task _producer = Task.CompletedTask;

    /// <summary>The source's failure (or cancellation); written before the channel completes.</summary>
    private ExceptionDispatchInfo? _failure;

    /// <summary>The failure of the source's <c>DisposeAsync</c> (not a cancellation this pump asked for), if any.</summary>
    private ExceptionDispatchInfo? _disposeFailure;

    /// <summary>True once the reader has called <see cref="ThrowIfFailed"/>: it has seen every failure there is.</summary>
    private bool _failureSeen;

    public SourcePump(int capacity, TimeProvider? clock, CancellationToken cancellationToken)
    {
        _channel = Channel.CreateBounded<Entry>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
            AllowSynchronousContinuations = false,
        });
        _clock = clock;
        _callerToken = cancellationToken;
        _cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
    }

    /// <summary>Gets the reader of the read-ahead buffer; it completes (without an error) when the producer is done.</summary>
    public ChannelReader<Entry> Reader => _channel.Reader;

    /// <summary>Starts reading <paramref name="source"/> on a thread-pool task.</summary>
    public void Start(IAsyncEnumerable<T> source) => _producer = Task.Run(() => ProduceAsync(source));

    /// <summary>After <see cref="Reader"/> reported completion: throws the cancellation once the consumer's token is
    /// cancelled, else rethrows the source's failure, if any.</summary>
    public void ThrowIfFailed()
    {
        _failureSeen = true;
        _callerToken.ThrowIfCancellationRequested();
        _failure?.Throw();
    }

    /// <summary>Stops the producer and awaits it; throws the failure of the source's disposal, unless the reader has
    /// seen it already through <see cref="ThrowIfFailed"/> or the consumer's token was cancelled when it left (the
    /// enumeration then ends as the cancellation; a cancellation after it left hides nothing).</summary>
    public async ValueTask DisposeAsync()
    {
        bool leftAfterCancelling = _callerToken.IsCancellationRequested;
        _cts.CancelQuietly();
        await _producer;
        _cts.Dispose();
        if (!_failureSeen && !leftAfterCancelling)
        {
            _disposeFailure?.Throw();
        }
    }

    /// <remarks>
    /// Every await here is <c>ConfigureAwait(false)</c>: the producer belongs to no caller's context, also when a source
    /// completes it inline on the consumer's thread.
    /// </remarks>
    private async Task ProduceAsync(IAsyncEnumerable<T> source)
    {
        try
        {
            IAsyncEnumerator<T> enumerator = source.GetAsyncEnumerator(_cts.Token);
            try
            {
                // Room first, then the next item: the items read and not yet taken never outnumber the capacity (none is
                // held here waiting for room). Only this writer writes, so the room it waited for is still there.
                while (await _channel.Writer.WaitToWriteAsync(_cts.Token).ConfigureAwait(false) &&
                       await enumerator.MoveNextAsync().ConfigureAwait(false))
                {
                    bool written = _channel.Writer.TryWrite(new Entry(enumerator.Current, _clock?.GetTimestamp() ?? 0));
                    Debug.Assert(written, "The only writer found room, and only the reader changes it (by making more).");
                }
            }
            finally
            {
                try
                {
                    await enumerator.DisposeAsync().ConfigureAwait(false);
                }
                catch (Exception ex) when (!ex.IsGivingWayTo(_cts.Token))
                {
                    _disposeFailure = ExceptionDispatchInfo.Capture(ex);
                    throw;
                }
            }
        }
        catch (Exception ex)
        {
            _failure = ExceptionDispatchInfo.Capture(ex);
        }
        finally
        {
            _channel.Writer.TryComplete();
        }
    }

    /// <summary>An item and the timestamp (of the pump's clock) at which it was read from the source.</summary>
    internal readonly record struct Entry(T Item, long Timestamp);
}
