namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Reads <paramref name="source"/> ahead on its own task into a buffer of up to <paramref name="capacity"/> items,
    /// decoupling a slow producer from a slow consumer.
    /// </summary>
    /// <typeparam name="T">The type of the elements.</typeparam>
    /// <param name="source">The sequence to read ahead.</param>
    /// <param name="capacity">The most items read ahead and not yet consumed.</param>
    /// <returns>The same items, in the same order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is zero or negative.</exception>
    /// <remarks>
    /// <para>
    /// Deferred: the producer starts on the first <c>MoveNextAsync</c>, on the thread pool (so the source does not run on
    /// the consumer's synchronization context). It pauses while the buffer is full.
    /// </para>
    /// <para>
    /// A source error surfaces in order, after the items read before it. Cancelling the token from <c>WithCancellation</c>
    /// cancels the source's token and ends a pending <c>MoveNextAsync</c> with <see cref="OperationCanceledException"/>
    /// (buffered items are dropped) once the producer has stopped and disposed the source: at once when the source
    /// honours its token, and when its pending read returns if it ignores it (as the concurrent operators wait for
    /// work that ignores its token). Disposing the enumerator, early or not, cancels the producer and awaits it, so the
    /// source has been disposed (exactly once) when <c>DisposeAsync</c> returns.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// await foreach (Record r in ReadRecordsAsync().Prefetch(capacity: 64))
    /// {
    ///     await SaveAsync(r); // the next records are read meanwhile
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<T> Prefetch<T>(this IAsyncEnumerable<T> source, int capacity)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        return Impl(source, capacity);

        static async IAsyncEnumerable<T> Impl(IAsyncEnumerable<T> source, int capacity, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await using var pump = new SourcePump<T>(capacity, clock: null, cancellationToken);
            pump.Start(source);
            while (await pump.Reader.WaitToReadAsync(cancellationToken))
            {
                while (pump.Reader.TryRead(out SourcePump<T>.Entry entry))
                {
                    // Items already read ahead are not handed out once the caller has cancelled.
                    cancellationToken.ThrowIfCancellationRequested();
                    yield return entry.Item;
                }
            }

            pump.ThrowIfFailed();
        }
    }
}
