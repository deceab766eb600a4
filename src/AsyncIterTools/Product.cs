namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields every pair of an item of <paramref name="first"/> with an item of <paramref name="second"/>, the second
    /// varying fastest (Python's <c>itertools.product(first, second)</c>).
    /// </summary>
    /// <typeparam name="T1">The type of the first sequence's items.</typeparam>
    /// <typeparam name="T2">The type of the second sequence's items.</typeparam>
    /// <param name="first">The outer sequence; streamed.</param>
    /// <param name="second">The inner sequence; read completely into memory first.</param>
    /// <returns>The Cartesian product, in Python's order; empty when either sequence is empty.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="first"/> or <paramref name="second"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. <paramref name="second"/> is enumerated once, to its end, before
    /// <paramref name="first"/> is read (if it is empty, <paramref name="first"/> is never enumerated); then
    /// <paramref name="first"/> is streamed. Both are enumerated with the enumeration token and disposed when done
    /// with, or when the enumeration stops early or fails.
    /// </remarks>
    public static IAsyncEnumerable<(T1, T2)> Product<T1, T2>(IAsyncEnumerable<T1> first, IAsyncEnumerable<T2> second)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        return Impl(first, second);

        static async IAsyncEnumerable<(T1, T2)> Impl(IAsyncEnumerable<T1> first, IAsyncEnumerable<T2> second, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            List<T2> pool = await SequenceBuffer.ToListAsync(second, cancellationToken);
            if (pool.Count == 0)
            {
                yield break;
            }

            await foreach (T1 x in first.WithCancellation(cancellationToken))
            {
                for (int i = 0; i < pool.Count; i++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    yield return (x, pool[i]);
                }
            }
        }
    }

    /// <summary>The most elements an array can have (<c>Array.MaxLength</c>, which netstandard2.0 lacks).</summary>
    private const int MaxArrayLength = 0x7FFFFFC7;

    /// <summary>
    /// Yields the Cartesian product of <paramref name="sources"/>, repeated <paramref name="repeat"/> times, as arrays
    /// (Python's <c>itertools.product(*sources, repeat=repeat)</c>): the last position varies fastest.
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="sources">
    /// The sequences to combine; read once, when the result is enumerated (deferred, like the sources themselves).
    /// A <see langword="null"/> element throws <see cref="ArgumentNullException"/> (naming <paramref name="sources"/>) from
    /// the first <c>MoveNextAsync</c>.
    /// </param>
    /// <param name="repeat">How many times the list of sources is repeated.</param>
    /// <returns>
    /// One new array of length <c>sources.Count * repeat</c> per combination. When that length is zero (no sources,
    /// or <paramref name="repeat"/> is 0) a single empty array, as in Python; nothing when any source is empty.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="sources"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="repeat"/> is negative; or, from the first
    /// <c>MoveNextAsync</c> (the number of sources is known then), <c>sources.Count * repeat</c> is more than an array
    /// can hold (2,147,483,591, <c>Array.MaxLength</c>).</exception>
    /// <remarks>
    /// Execution is deferred. Every source is enumerated at most once, with the enumeration token. When
    /// <paramref name="repeat"/> is 1 the sources after the first are read completely into memory, in order, and then
    /// the first is streamed; otherwise every source is read into memory first, in order. Reading stops at the first
    /// empty source (the product is empty): the sources after it, and a first source that is streamed, are never
    /// enumerated. Each source is disposed as soon as it has been read, and on early exit or failure.
    /// </remarks>
    public static IAsyncEnumerable<T[]> Product<T>(IEnumerable<IAsyncEnumerable<T>> sources, int repeat = 1)
    {
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentOutOfRangeException.ThrowIfNegative(repeat);
        return Impl(sources, repeat);

        static async IAsyncEnumerable<T[]> Impl(IEnumerable<IAsyncEnumerable<T>> sequences, int repeat, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            IAsyncEnumerable<T>[] sources = [.. sequences.Select(s => Arguments.NotNullElement(s, nameof(sources)))];
            if ((long)sources.Length * repeat > MaxArrayLength)
            {
                throw new ArgumentOutOfRangeException(
                    nameof(repeat), repeat, $"{sources.Length} sources repeated {repeat} times make rows longer than an array can be.");
            }

            int width = sources.Length * repeat;
            if (width == 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return [];
                yield break;
            }

            // pools[k] holds the items of sources[k]; pools[0] stays null when the first source is streamed.
            bool streamFirst = repeat == 1;
            var pools = new List<T>?[sources.Length];
            for (int k = streamFirst ? 1 : 0; k < sources.Length; k++)
            {
                List<T> pool = await SequenceBuffer.ToListAsync(sources[k], cancellationToken);
                if (pool.Count == 0)
                {
                    yield break;
                }

                pools[k] = pool;
            }

            // Position p (1 <= p < width) of a row draws from pools[p % sources.Length]; indices[p] is its cursor.
            int[] indices = new int[width];
            if (streamFirst)
            {
                await foreach (T head in sources[0].WithCancellation(cancellationToken))
                {
                    Array.Clear(indices, 0, indices.Length);
                    do
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        yield return BuildRow(head, pools, indices);
                    }
                    while (Advance(pools, indices, lowest: 1));
                }
            }
            else
            {
                do
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    yield return BuildRow(pools[0]![indices[0]], pools, indices);
                }
                while (Advance(pools, indices, lowest: 0));
            }
        }

        static T[] BuildRow(T head, List<T>?[] pools, int[] indices)
        {
            var row = new T[indices.Length];
            row[0] = head;
            for (int p = 1; p < row.Length; p++)
            {
                row[p] = pools[p % pools.Length]![indices[p]];
            }

            return row;
        }

        // Odometer step over positions lowest..width-1, the last varying fastest; false when it wraps around.
        static bool Advance(List<T>?[] pools, int[] indices, int lowest)
        {
            for (int p = indices.Length - 1; p >= lowest; p--)
            {
                if (++indices[p] < pools[p % pools.Length]!.Count)
                {
                    return true;
                }

                indices[p] = 0;
            }

            return false;
        }
    }
}
