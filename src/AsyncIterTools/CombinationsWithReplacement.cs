using System.Runtime.CompilerServices;
using AsyncIterTools.Internal;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Yields every selection of <paramref name="length"/> items where a position may be chosen more than once,
    /// keeping source order within each (Python's <c>itertools.combinations_with_replacement(source, length)</c>), in
    /// Python's order.
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The source sequence; items are distinguished by position, not by value.</param>
    /// <param name="length">The length of each combination.</param>
    /// <returns>
    /// One new array per combination: <c>(n + length - 1)! / (length! (n - 1)!)</c> of them. A single empty array when
    /// <paramref name="length"/> is 0; nothing when the source is empty and <paramref name="length"/> is positive.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <remarks>
    /// Execution is deferred. The source is read completely into memory, with the enumeration token, and disposed
    /// before the first combination is yielded; the token is then checked before each combination.
    /// </remarks>
    public static IAsyncEnumerable<T[]> CombinationsWithReplacement<T>(this IAsyncEnumerable<T> source, int length)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        return Impl(source, length);

        static async IAsyncEnumerable<T[]> Impl(IAsyncEnumerable<T> source, int r, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            List<T> pool = await SequenceBuffer.ToListAsync(source, cancellationToken);
            int n = pool.Count;
            if (n == 0 && r > 0)
            {
                yield break;
            }

            // indices is non-decreasing, each below n.
            int[] indices = new int[r];
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return Pick(pool, indices, r);

                int k = r - 1;
                while (k >= 0 && indices[k] == n - 1)
                {
                    k--;
                }

                if (k < 0)
                {
                    yield break;
                }

                int next = indices[k] + 1;
                for (int j = k; j < r; j++)
                {
                    indices[j] = next;
                }
            }
        }
    }
}
