namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Returns an infinite sequence of evenly spaced numbers: <paramref name="start"/>, <c>start + step</c>,
    /// <c>start + 2 * step</c>, ... (Python's <c>itertools.count</c>).
    /// </summary>
    /// <param name="start">The first number.</param>
    /// <param name="step">The difference between consecutive numbers; may be zero or negative.</param>
    /// <returns>An endless sequence; bound it with <c>Take</c> or <see cref="Slice{T}(IAsyncEnumerable{T}, int)"/>.</returns>
    /// <remarks>
    /// Execution is deferred. Every item completes synchronously; the enumeration token is checked before each
    /// item, so cancelling it ends the loop with <see cref="OperationCanceledException"/>. Arithmetic is unchecked:
    /// the sequence wraps around past <see cref="long.MaxValue"/>.
    /// </remarks>
    public static IAsyncEnumerable<long> Count(long start = 0, long step = 1)
    {
        return Impl(start, step);

        static async IAsyncEnumerable<long> Impl(long start, long step, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            for (long value = start; ; value = unchecked(value + step))
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return value;
            }
        }
    }
}
