using AsyncIterTools.Internal;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once and
    /// returns the outcome of each, success or failure, in input order (Python's <c>gather(..., return_exceptions=True)</c>).
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="work">
    /// Factories that start one piece of work each; each receives a token cancelled when the caller cancels.
    /// The sequence is enumerated lazily, one element each time a slot frees up, and disposed.
    /// </param>
    /// <param name="maxConcurrency">The most pieces of work running at once; <see langword="null"/> for no limit.</param>
    /// <param name="cancellationToken">Cancels the gathering: no new work starts and running work sees its token cancelled.</param>
    /// <returns>One <see cref="Outcome{T}"/> per piece of work, in the order of <paramref name="work"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrency"/> is zero or negative.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (thrown after the running work has finished).</exception>
    /// <exception cref="Exception">Enumerating <paramref name="work"/> failed (thrown after the running work has finished).</exception>
    /// <remarks>
    /// A failed piece of work (a factory that throws, a faulted task, or a task cancelled by its own token) becomes a failed
    /// <see cref="Outcome{T}"/> and does not stop the others. Work starts lazily in input order. When the returned task
    /// completes, in any way, no work is left running.
    /// </remarks>
    /// <example>
    /// <code>
    /// Outcome&lt;int&gt;[] outcomes = await AsyncIter.GatherSettledAsync(work, maxConcurrency: 2);
    /// int failed = outcomes.Count(o => !o.IsSuccess);
    /// </code>
    /// </example>
    public static Task<Outcome<T>[]> GatherSettledAsync<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        Arguments.ThrowIfInvalidMaxConcurrency(maxConcurrency);
        return GatherCoreAsync<T, Outcome<T>>(
            nameof(GatherSettledAsync),
            work,
            maxConcurrency ?? int.MaxValue,
            static (piece, results) =>
            {
                results.Set(piece.Index, piece.Error is null ? Outcome<T>.FromValue(piece.Result) : Outcome<T>.FromException(piece.Error.SourceException));
                return true;
            },
            cancellationToken);
    }
}
