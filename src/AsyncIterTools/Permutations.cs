namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields every ordered arrangement of <paramref name="length"/> distinct positions of the source (Python's
    /// <c>itertools.permutations(source, length)</c>), in Python's order: lexicographic by input position.
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The source sequence; items are distinguished by position, not by value.</param>
    /// <param name="length">The length of each permutation; <see langword="null"/> for the number of source items.</param>
    /// <returns>
    /// One new array per permutation: <c>n! / (n - length)!</c> of them. A single empty array when
    /// <paramref name="length"/> is 0 (or <see langword="null"/> with an empty source); nothing when
    /// <paramref name="length"/> exceeds the number of items.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <remarks>
    /// Execution is deferred. The source is read completely into memory, with the enumeration token, and disposed
    /// before the first permutation is yielded; the token is then checked before each permutation.
    /// </remarks>
    public static IAsyncEnumerable<T[]> Permutations<T>(this IAsyncEnumerable<T> source, int? length = null)
    {
        return Combinatorics.PickEach(source, length, Indices);

        static IEnumerable<int[]> Indices(int n, int r)
        {
            if (r > n)
            {
                yield break;
            }

            // indices is a permutation of 0..n-1 whose first r entries are the current arrangement;
            // cycles[i] counts the swaps left at position i before its suffix rotates back to sorted order.
            int[] indices = Combinatorics.Ascending(n);

            int[] cycles = new int[r];
            for (int i = 0; i < r; i++)
            {
                cycles[i] = n - i;
            }

            yield return indices;
            while (r > 0)
            {
                int i = r - 1;
                for (; i >= 0; i--)
                {
                    if (--cycles[i] == 0)
                    {
                        // Rotate indices[i..] left by one, restoring it to the order it had before position i moved.
                        int moved = indices[i];
                        Array.Copy(indices, i + 1, indices, i, n - i - 1);
                        indices[n - 1] = moved;
                        cycles[i] = n - i;
                    }
                    else
                    {
                        int j = n - cycles[i];
                        (indices[i], indices[j]) = (indices[j], indices[i]);
                        break;
                    }
                }

                if (i < 0)
                {
                    yield break;
                }

                yield return indices;
            }
        }
    }
}
