namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields the first <paramref name="stop"/> items of the source (Python's <c>itertools.islice(source, stop)</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="stop">How many items to take from the start.</param>
    /// <returns>At most <paramref name="stop"/> items.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="stop"/> is negative.</exception>
    /// <remarks>
    /// Execution is deferred. The source is never read past item <c>stop - 1</c>: once that item is yielded, the next
    /// <c>MoveNextAsync</c> (or disposal) of the slice disposes the source without reading it again, and <c>Slice(0)</c>
    /// does not enumerate it at all.
    /// </remarks>
    public static IAsyncEnumerable<T> Slice<T>(this IAsyncEnumerable<T> source, int stop)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(stop);
        return SliceImpl(source, 0, stop, 1);
    }

    /// <summary>
    /// Yields the items at positions <paramref name="start"/>, <c>start + step</c>, <c>start + 2 * step</c>, ...
    /// below <paramref name="stop"/> (Python's <c>itertools.islice(source, start, stop, step)</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="start">The zero-based position of the first item to yield.</param>
    /// <param name="stop">The position to stop before; <see langword="null"/> to go to the end of the source.</param>
    /// <param name="step">The distance between yielded positions.</param>
    /// <returns>The selected items, in order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="start"/> or <paramref name="stop"/> is negative, or <paramref name="step"/> is zero or negative.
    /// </exception>
    /// <remarks>
    /// Execution is deferred. The source is read only as far as the last item it must yield: once no position
    /// below <paramref name="stop"/> remains, the next <c>MoveNextAsync</c> (or disposal) of the slice disposes it without
    /// reading it again (it is not even enumerated when <paramref name="stop"/> is at most <paramref name="start"/>).
    /// Skipped items are read and dropped without allocating.
    /// </remarks>
    public static IAsyncEnumerable<T> Slice<T>(this IAsyncEnumerable<T> source, int start, int? stop, int step = 1)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        if (stop is int end)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(end, nameof(stop));
        }

        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(step);
        return SliceImpl(source, start, stop ?? -1, step);
    }

    // stop is the exclusive end position, or -1 for none.
    private static async IAsyncEnumerable<T> SliceImpl<T>(
        IAsyncEnumerable<T> source,
        int start,
        int stop,
        int step,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        if (stop >= 0 && stop <= start)
        {
            yield break;
        }

        // Positions are longs so that next + step cannot overflow.
        long limit = stop < 0 ? long.MaxValue : stop;
        long next = start;
        long position = 0;
        await using IAsyncEnumerator<T> e = source.GetAsyncEnumerator(cancellationToken);
        while (true)
        {
            for (; position < next; position++)
            {
                if (!await e.MoveNextAsync())
                {
                    yield break;
                }
            }

            if (!await e.MoveNextAsync())
            {
                yield break;
            }

            position++;
            yield return e.Current;
            next += step;
            if (next >= limit)
            {
                yield break;
            }
        }
    }
}
