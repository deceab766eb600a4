namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields every selection of <paramref name="length"/> items at distinct positions, keeping source order within
    /// each (Python's <c>itertools.combinations(source, length)</c>), in Python's order: lexicographic by position.
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The source sequence; items are distinguished by position, not by value.</param>
    /// <param name="length">The length of each combination.</param>
    /// <returns>
    /// One new array per combination: <c>n! / (length! (n - length)!)</c> of them. A single empty array when
    /// <paramref name="length"/> is 0; nothing when it exceeds the number of items.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <remarks>
    /// Execution is deferred. The source is read completely into memory, with the enumeration token, and disposed
    /// before the first combination is yielded; the token is then checked before each combination.
    /// </remarks>
    public static IAsyncEnumerable<T[]> Combinations<T>(this IAsyncEnumerable<T> source, int length)
    {
        return Combinatorics.PickEach(source, length, Indices);

        // indices is strictly increasing; position i can rise to at most i + n - r.
        static IEnumerable<int[]> Indices(int n, int r)
        {
            if (r > n)
            {
                yield break;
            }

            int[] indices = Combinatorics.Ascending(r);
            while (true)
            {
                yield return indices;
                int k = r - 1;
                while (k >= 0 && indices[k] == k + n - r)
                {
                    k--;
                }

                if (k < 0)
                {
                    yield break;
                }

                indices[k]++;
                for (int j = k + 1; j < r; j++)
                {
                    indices[j] = indices[j - 1] + 1;
                }
            }
        }
    }
}
