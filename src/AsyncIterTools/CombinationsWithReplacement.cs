namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields every selection of <paramref name="length"/> items where a position may be chosen more than once,
    /// keeping source order within each (Python's <c>itertools.combinations_with_replacement(source, length)</c>), in
    /// Python's order.
    /// </summary>
    /// <inheritdoc cref="Combinations{T}(IAsyncEnumerable{T}, int)" path="/typeparam"/>
    /// <inheritdoc cref="Combinations{T}(IAsyncEnumerable{T}, int)" path="/param"/>
    /// <returns>
    /// One new array per combination: <c>(n + length - 1)! / (length! (n - 1)!)</c> of them. A single empty array when
    /// <paramref name="length"/> is 0; nothing when the source is empty and <paramref name="length"/> is positive.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative, or more than an array can hold
    /// (2,147,483,591, <c>Array.MaxLength</c>; a row repeats items, so it can be longer than the source).</exception>
    /// <inheritdoc cref="Combinations{T}(IAsyncEnumerable{T}, int)" path="/remarks"/>
    public static IAsyncEnumerable<T[]> CombinationsWithReplacement<T>(this IAsyncEnumerable<T> source, int length)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (length > MaxArrayLength)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "Rows of this length are longer than an array can be.");
        }

        return Combinatorics.PickEach(source, length, Indices);

        // indices is non-decreasing, each below n; the rightmost that can still rise does, and those after it follow it.
        static IEnumerable<int[]> Indices(int n, int r)
        {
            if (n == 0 && r > 0)
            {
                yield break;
            }

            int[] indices = new int[r];
            int k;
            do
            {
                yield return indices;
                k = r - 1;
                while (k >= 0 && indices[k] == n - 1)
                {
                    k--;
                }

                if (k >= 0)
                {
                    int next = indices[k] + 1;
                    for (int j = k; j < r; j++)
                    {
                        indices[j] = next;
                    }
                }
            }
            while (k >= 0);
        }
    }
}
