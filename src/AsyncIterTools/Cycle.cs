namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields the items of the source, then repeats them forever (Python's <c>itertools.cycle</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <returns>An endless repetition of the source; empty when the source is empty.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. The source is enumerated exactly once, with the enumeration token: its items are
    /// yielded as they arrive and kept, and the source is disposed when it ends; later passes replay the kept items
    /// (memory is O(n)). An empty source completes the result at once, it never spins. During replay the
    /// enumeration token is checked before each item.
    /// </remarks>
    public static IAsyncEnumerable<T> Cycle<T>(this IAsyncEnumerable<T> source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return Impl(source);

        static async IAsyncEnumerable<T> Impl(IAsyncEnumerable<T> source, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            var saved = new List<T>();
            await foreach (T item in source.WithCancellation(cancellationToken))
            {
                saved.Add(item);
                yield return item;
            }

            if (saved.Count == 0)
            {
                yield break;
            }

            while (true)
            {
                for (int i = 0; i < saved.Count; i++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    yield return saved[i];
                }
            }
        }
    }
}
