namespace AsyncIterTools.Internal;

/// <summary>
/// What Permutations, Combinations and CombinationsWithReplacement share: read the source into a pool, then yield, for
/// each arrangement of pool positions the operator's index generator produces, a new array of the items at those
/// positions. The generators are pure (positions in, positions out), so each operator file holds only its own order.
/// </summary>
internal static class Combinatorics
{
    /// <summary>
    /// Checks the arguments at the call (<paramref name="source"/> not null, <paramref name="length"/> not negative), then
    /// returns the deferred <see cref="PickEachImpl"/>.
    /// </summary>
    public static IAsyncEnumerable<T[]> PickEach<T>(IAsyncEnumerable<T> source, int? length, Func<int, int, IEnumerable<int[]>> indexSets)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (length is { } r)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(r, nameof(length));
        }

        return PickEachImpl(source, length, indexSets);
    }

    /// <summary>
    /// Yields one new array per index set of <paramref name="indexSets"/>(<c>n</c>, <c>r</c>), where <c>n</c> is the number
    /// of source items and <c>r</c> is <paramref name="length"/> (or <c>n</c> when it is null). The source is read completely,
    /// with the enumeration token, and disposed before the first array; the token is checked before each array.
    /// </summary>
    /// <param name="source">The items.</param>
    /// <param name="length">How many positions each arrangement has; null for all of them.</param>
    /// <param name="indexSets">Yields the arrangements in order, each as an array whose first <c>r</c> entries are positions; it may reuse one array.</param>
    /// <param name="cancellationToken">The enumeration token.</param>
    private static async IAsyncEnumerable<T[]> PickEachImpl<T>(
        IAsyncEnumerable<T> source,
        int? length,
        Func<int, int, IEnumerable<int[]>> indexSets,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        List<T> pool = await SequenceBuffer.ToListAsync(source, cancellationToken);
        int r = length ?? pool.Count;
        foreach (int[] indices in indexSets(pool.Count, r))
        {
            cancellationToken.ThrowIfCancellationRequested();
            var picked = new T[r];
            for (int i = 0; i < r; i++)
            {
                picked[i] = pool[indices[i]];
            }

            yield return picked;
        }
    }

    /// <summary>Returns a new array <c>0, 1, ..., count - 1</c>: the first arrangement in Python's order.</summary>
    public static int[] Ascending(int count)
    {
        int[] indices = new int[count];
        for (int i = 0; i < count; i++)
        {
            indices[i] = i;
        }

        return indices;
    }
}
