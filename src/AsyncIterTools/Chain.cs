namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Concatenates the sources: yields every item of the first, then every item of the second, and so on
    /// (Python's <c>itertools.chain</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="sources">The sequences to concatenate, in order. The array is copied at the call.</param>
    /// <returns>The concatenation of <paramref name="sources"/>; empty when there are none.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="sources"/> is or contains <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. Each source is enumerated only once the previous one has ended, with the
    /// enumeration token, and is disposed before the next one starts (or when enumeration stops early or fails).
    /// </remarks>
    public static IAsyncEnumerable<T> Chain<T>(params IAsyncEnumerable<T>[] sources)
    {
        ArgumentNullException.ThrowIfNull(sources);
        return ChainImpl(first: null, Arguments.CopyNonNull(sources, nameof(sources)));
    }

    /// <summary>
    /// Concatenates a lazily produced sequence of sources (Python's <c>itertools.chain.from_iterable</c> over a
    /// synchronous iterable).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="sources">The sequences to concatenate; enumerated lazily, one source at a time.</param>
    /// <returns>The concatenation of <paramref name="sources"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="sources"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred: <paramref name="sources"/> itself is enumerated only as the result is, so it may be
    /// endless. A <see langword="null"/> element is reported when it is reached, as an
    /// <see cref="ArgumentNullException"/> (naming <paramref name="sources"/>) thrown from <c>MoveNextAsync</c>. Each source is enumerated with the
    /// enumeration token and disposed before the next one starts.
    /// </remarks>
    public static IAsyncEnumerable<T> Chain<T>(IEnumerable<IAsyncEnumerable<T>> sources)
    {
        ArgumentNullException.ThrowIfNull(sources);
        return ChainImpl(first: null, sources);
    }

    /// <summary>
    /// Yields every item of <paramref name="source"/>, then every item of each of <paramref name="others"/> in order
    /// (Python's <c>itertools.chain(source, *others)</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The first sequence.</param>
    /// <param name="others">The sequences to append. The array is copied at the call.</param>
    /// <returns>The concatenation of <paramref name="source"/> and <paramref name="others"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="others"/> is, or <paramref name="others"/> contains, <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. Each sequence is enumerated only once the previous one has ended, with the
    /// enumeration token, and is disposed before the next one starts (or when enumeration stops early or fails).
    /// </remarks>
    public static IAsyncEnumerable<T> Chain<T>(this IAsyncEnumerable<T> source, params IAsyncEnumerable<T>[] others)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(others);
        return ChainImpl(source, Arguments.CopyNonNull(others, nameof(others)));
    }

    private static async IAsyncEnumerable<T> ChainImpl<T>(
        IAsyncEnumerable<T>? first,
        IEnumerable<IAsyncEnumerable<T>> rest,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        if (first is not null)
        {
            await foreach (T item in first.WithCancellation(cancellationToken))
            {
                yield return item;
            }
        }

        foreach (IAsyncEnumerable<T>? source in rest)
        {
            await foreach (T item in Arguments.NotNullElement(source, "sources").WithCancellation(cancellationToken))
            {
                yield return item;
            }
        }
    }
}
