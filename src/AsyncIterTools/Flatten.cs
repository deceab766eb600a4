namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Flattens a sequence of async sequences: yields every item of the first inner sequence, then of the next,
    /// and so on (Python's <c>itertools.chain.from_iterable</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The sequence of sequences.</param>
    /// <returns>The concatenation of the inner sequences.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. The outer sequence is advanced only when the current inner sequence has ended, so it
    /// may be endless. Each inner sequence is enumerated with the enumeration token and disposed before the next
    /// is requested. A <see langword="null"/> inner sequence throws <see cref="ArgumentNullException"/> (naming
    /// <paramref name="source"/>) from <c>MoveNextAsync</c> when it is reached.
    /// </remarks>
    public static IAsyncEnumerable<T> Flatten<T>(this IAsyncEnumerable<IAsyncEnumerable<T>> source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return Impl(source);

        static async IAsyncEnumerable<T> Impl(IAsyncEnumerable<IAsyncEnumerable<T>> source, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await foreach (IAsyncEnumerable<T>? inner in source.WithCancellation(cancellationToken))
            {
                await foreach (T item in Arguments.NotNullElement(inner, nameof(source)).WithCancellation(cancellationToken))
                {
                    yield return item;
                }
            }
        }
    }

    /// <summary>
    /// Flattens a sequence of synchronous sequences (arrays, lists, ...): yields every item of each inner sequence
    /// in order (Python's <c>itertools.chain.from_iterable</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The sequence of sequences.</param>
    /// <returns>The concatenation of the inner sequences.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. Each inner sequence's enumerator is disposed before the outer sequence is advanced.
    /// The enumeration token flows to <paramref name="source"/> and is checked before each inner item. A
    /// <see langword="null"/> inner sequence throws <see cref="ArgumentNullException"/> (naming <paramref name="source"/>)
    /// from <c>MoveNextAsync</c> when it is reached.
    /// </remarks>
    public static IAsyncEnumerable<T> Flatten<T>(this IAsyncEnumerable<IEnumerable<T>> source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return Impl(source);

        static async IAsyncEnumerable<T> Impl(IAsyncEnumerable<IEnumerable<T>> source, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await foreach (IEnumerable<T>? inner in source.WithCancellation(cancellationToken))
            {
                foreach (T item in Arguments.NotNullElement(inner, nameof(source)))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    yield return item;
                }
            }
        }
    }
}
