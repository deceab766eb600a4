namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields each pair of consecutive items: <c>(s0, s1), (s1, s2), (s2, s3), ...</c> (Python's
    /// <c>itertools.pairwise</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <returns>The overlapping pairs; empty when the source has fewer than two items.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. The source is enumerated once with the enumeration token and disposed when the
    /// enumeration ends, stops early, or fails. Nothing is allocated per item.
    /// </remarks>
    public static IAsyncEnumerable<(T Previous, T Current)> Pairwise<T>(this IAsyncEnumerable<T> source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return Impl(source);

        static async IAsyncEnumerable<(T Previous, T Current)> Impl(IAsyncEnumerable<T> source, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await using IAsyncEnumerator<T> e = source.GetAsyncEnumerator(cancellationToken);
            if (!await e.MoveNextAsync())
            {
                yield break;
            }

            T previous = e.Current;
            while (await e.MoveNextAsync())
            {
                T current = e.Current;
                yield return (previous, current);
                previous = current;
            }
        }
    }
}
