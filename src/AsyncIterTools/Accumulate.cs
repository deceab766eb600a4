namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields running totals: the first item, then <c>func(total, item)</c> for each following item (Python's
    /// <c>itertools.accumulate(source, func)</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items and totals.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="func">Combines the running total with the next item.</param>
    /// <returns>One total per source item; empty when the source is.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="func"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. The source is enumerated once with the enumeration token and disposed when the
    /// enumeration ends, stops early, or fails (including when <paramref name="func"/> throws).
    /// </remarks>
    public static IAsyncEnumerable<T> Accumulate<T>(this IAsyncEnumerable<T> source, Func<T, T, T> func)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(func);
        return source.Accumulate((total, item, _) => new ValueTask<T>(func(total, item)));
    }

    /// <summary>
    /// Yields running totals with an asynchronous combining function: the first item, then
    /// <c>await func(total, item, token)</c> for each following item.
    /// </summary>
    /// <typeparam name="T">The type of the items and totals.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="func">Combines the running total with the next item; receives the enumeration token.</param>
    /// <returns>One total per source item; empty when the source is.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="func"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. Calls to <paramref name="func"/> never overlap. The source is enumerated once with the
    /// enumeration token and disposed when the enumeration ends, stops early, or fails.
    /// </remarks>
    public static IAsyncEnumerable<T> Accumulate<T>(this IAsyncEnumerable<T> source, Func<T, T, CancellationToken, ValueTask<T>> func)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(func);
        return Impl(source, func);

        static async IAsyncEnumerable<T> Impl(IAsyncEnumerable<T> source, Func<T, T, CancellationToken, ValueTask<T>> func, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await using IAsyncEnumerator<T> e = source.GetAsyncEnumerator(cancellationToken);
            if (!await e.MoveNextAsync())
            {
                yield break;
            }

            T total = e.Current;
            yield return total;
            while (await e.MoveNextAsync())
            {
                total = await func(total, e.Current, cancellationToken);
                yield return total;
            }
        }
    }

    /// <summary>
    /// Yields running totals starting from <paramref name="seed"/>: <paramref name="seed"/> itself, then
    /// <c>func(total, item)</c> for each item (Python's <c>itertools.accumulate(source, func, initial=seed)</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <typeparam name="TAcc">The type of the totals.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="seed">The initial total, yielded first.</param>
    /// <param name="func">Combines the running total with the next item.</param>
    /// <returns>One more total than the source has items: an empty source yields just <paramref name="seed"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="func"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred; <paramref name="seed"/> is yielded before the source is read. The source is enumerated
    /// once with the enumeration token and disposed when the enumeration ends, stops early, or fails.
    /// </remarks>
    public static IAsyncEnumerable<TAcc> Accumulate<T, TAcc>(this IAsyncEnumerable<T> source, TAcc seed, Func<TAcc, T, TAcc> func)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(func);
        return source.Accumulate(seed, (total, item, _) => new ValueTask<TAcc>(func(total, item)));
    }

    /// <summary>
    /// Yields running totals starting from <paramref name="seed"/>, with an asynchronous combining function:
    /// <paramref name="seed"/> itself, then <c>await func(total, item, token)</c> for each item.
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <typeparam name="TAcc">The type of the totals.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="seed">The initial total, yielded first.</param>
    /// <param name="func">Combines the running total with the next item; receives the enumeration token.</param>
    /// <returns>One more total than the source has items: an empty source yields just <paramref name="seed"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="func"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred; <paramref name="seed"/> is yielded before the source is read (once the enumeration token
    /// is checked: a cancelled one throws <see cref="OperationCanceledException"/> instead). Calls to
    /// <paramref name="func"/> never overlap. The source is enumerated once with the enumeration token and disposed
    /// when the enumeration ends, stops early, or fails.
    /// </remarks>
    public static IAsyncEnumerable<TAcc> Accumulate<T, TAcc>(this IAsyncEnumerable<T> source, TAcc seed, Func<TAcc, T, CancellationToken, ValueTask<TAcc>> func)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(func);
        return Impl(source, seed, func);

        static async IAsyncEnumerable<TAcc> Impl(IAsyncEnumerable<T> source, TAcc seed, Func<TAcc, T, CancellationToken, ValueTask<TAcc>> func, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            cancellationToken.ThrowIfCancellationRequested(); // the seed is produced without awaiting the source
            TAcc total = seed;
            yield return total;
            await foreach (T item in source.WithCancellation(cancellationToken))
            {
                total = await func(total, item, cancellationToken);
                yield return total;
            }
        }
    }
}
