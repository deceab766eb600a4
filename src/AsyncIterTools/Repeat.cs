namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Returns a sequence that yields <paramref name="value"/> <paramref name="times"/> times, or forever when
    /// <paramref name="times"/> is <see langword="null"/> (Python's <c>itertools.repeat</c>).
    /// </summary>
    /// <typeparam name="T">The type of the value.</typeparam>
    /// <param name="value">The value to yield; the same instance every time.</param>
    /// <param name="times">How many times to yield it; <see langword="null"/> for an endless sequence.</param>
    /// <returns>A sequence of <paramref name="value"/>.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="times"/> is negative.</exception>
    /// <remarks>
    /// Execution is deferred. Every item completes synchronously; the enumeration token is checked before each
    /// item, so cancelling it ends the loop with <see cref="OperationCanceledException"/>.
    /// </remarks>
    public static IAsyncEnumerable<T> Repeat<T>(T value, int? times = null)
    {
        if (times is int count)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(count, nameof(times));
            return Finite(value, count);
        }

        return Forever(value);

        static async IAsyncEnumerable<T> Finite(T value, int count, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            for (int i = 0; i < count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return value;
            }
        }

        static async IAsyncEnumerable<T> Forever(T value, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return value;
            }
        }
    }
}
