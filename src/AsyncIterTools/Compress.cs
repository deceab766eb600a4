namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields the items of <paramref name="source"/> whose corresponding selector is <see langword="true"/>
    /// (Python's <c>itertools.compress</c>); stops when either sequence ends.
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The items to filter.</param>
    /// <param name="selectors">One flag per item, read in step with <paramref name="source"/>.</param>
    /// <returns>The selected items, in order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="selectors"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. Each step reads one item from <paramref name="source"/>, then one flag from
    /// <paramref name="selectors"/> (as Python's <c>zip</c> does): when <paramref name="source"/> ends,
    /// <paramref name="selectors"/> is not read again. Both are enumerated with the enumeration token and both are
    /// disposed when the enumeration ends, stops early, or fails.
    /// </remarks>
    public static IAsyncEnumerable<T> Compress<T>(this IAsyncEnumerable<T> source, IAsyncEnumerable<bool> selectors)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(selectors);
        return Impl(source, selectors);

        static async IAsyncEnumerable<T> Impl(IAsyncEnumerable<T> source, IAsyncEnumerable<bool> selectors, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await using IAsyncEnumerator<T> items = source.GetAsyncEnumerator(cancellationToken);
            await using IAsyncEnumerator<bool> flags = selectors.GetAsyncEnumerator(cancellationToken);
            while (await items.MoveNextAsync() && await flags.MoveNextAsync())
            {
                if (flags.Current)
                {
                    yield return items.Current;
                }
            }
        }
    }
}
