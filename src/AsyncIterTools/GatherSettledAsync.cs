using System.Threading.RateLimiting;

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
        CancellationToken cancellationToken = default) =>
        GatherCore<T, Outcome<T>>(nameof(GatherSettledAsync), work, maxConcurrency, limiter: null, timeProvider: null, RecordSettled, cancellationToken);

    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once, each
    /// while holding a lease of <paramref name="limiter"/>, and returns the outcome of each in input order.
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="work">
    /// Factories that start one piece of work each; each receives a token cancelled when the caller cancels.
    /// The sequence is enumerated lazily, one element each time a slot frees up, and disposed.
    /// </param>
    /// <param name="maxConcurrency">
    /// The most pieces of work in flight at once, waiting for a lease included; <see langword="null"/> for no limit but the limiter's.
    /// </param>
    /// <param name="limiter">
    /// Grants one lease (<c>AcquireAsync(1)</c>) per piece before its factory runs; the lease is disposed when that piece ends.
    /// </param>
    /// <param name="cancellationToken">Cancels the gathering: no new work starts and running work sees its token cancelled.</param>
    /// <returns>One <see cref="Outcome{T}"/> per piece of work, in the order of <paramref name="work"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> or <paramref name="limiter"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrency"/> is zero or negative.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (thrown after the running work has finished).</exception>
    /// <exception cref="InvalidOperationException">
    /// <paramref name="limiter"/> refused a lease without <see cref="MetadataName.RetryAfter"/> metadata: the whole
    /// gathering fails (thrown after the running work has finished), it is not one failed outcome.
    /// </exception>
    /// <exception cref="Exception">Enumerating <paramref name="work"/> failed (thrown after the running work has finished).</exception>
    /// <remarks>
    /// <para>
    /// As <see cref="GatherSettledAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, CancellationToken)"/>, with
    /// the limiter on top of <paramref name="maxConcurrency"/>: a failed piece of work is a failed <see cref="Outcome{T}"/>.
    /// A refused lease that carries <see cref="MetadataName.RetryAfter"/> is asked for again after that delay (on
    /// <see cref="TimeProvider.System"/>, or the clock given to the other overload).
    /// </para>
    /// <para>
    /// A lease refused without <see cref="MetadataName.RetryAfter"/> is not an outcome of that piece (its work never
    /// started): the limiter cannot serve the gathering, so it stops as <c>GatherAsync</c> does on a failure (running work
    /// is cancelled and awaited, nothing new starts) and throws an <see cref="InvalidOperationException"/> naming the
    /// limiter. Every lease acquired is disposed when its piece ends; when the returned task completes, none is held.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// using var perSecond = new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
    /// {
    ///     TokenLimit = 10, TokensPerPeriod = 10, ReplenishmentPeriod = TimeSpan.FromSeconds(1), QueueLimit = 1_000,
    /// });
    /// Outcome&lt;int&gt;[] outcomes = await AsyncIter.GatherSettledAsync(work, maxConcurrency: 4, perSecond);
    /// </code>
    /// </example>
    public static Task<Outcome<T>[]> GatherSettledAsync<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency,
        RateLimiter limiter,
        CancellationToken cancellationToken = default) =>
        GatherSettledAsync(work, maxConcurrency, limiter, timeProvider: null, cancellationToken);

    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once, each
    /// while holding a lease of <paramref name="limiter"/>, and returns the outcome of each in input order; waits after a
    /// refusal's <c>RetryAfter</c> on <paramref name="timeProvider"/>.
    /// </summary>
    /// <inheritdoc cref="GatherSettledAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, RateLimiter, CancellationToken)" path="/typeparam"/>
    /// <inheritdoc cref="GatherSettledAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, RateLimiter, CancellationToken)" path="/param[@name='work']"/>
    /// <inheritdoc cref="GatherAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, RateLimiter, TimeProvider?, CancellationToken)" path="/param[@name!='work']"/>
    /// <returns>One <see cref="Outcome{T}"/> per piece of work, in the order of <paramref name="work"/>.</returns>
    /// <inheritdoc cref="GatherSettledAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, RateLimiter, CancellationToken)" path="/exception"/>
    /// <remarks>Same semantics as <see cref="GatherSettledAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, RateLimiter, CancellationToken)"/>.</remarks>
    public static Task<Outcome<T>[]> GatherSettledAsync<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency,
        RateLimiter limiter,
        TimeProvider? timeProvider,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(limiter);
        return GatherCore<T, Outcome<T>>(nameof(GatherSettledAsync), work, maxConcurrency, limiter, timeProvider, RecordSettled, cancellationToken);
    }

    /// <summary>
    /// GatherSettledAsync's outcome rule: every piece's outcome goes to its slot, and nothing stops the gathering but a
    /// failure of the limiter (a refused lease, whose piece never ran, or a lease whose release failed) or of the
    /// sequence of work (it failed, or held a <see langword="null"/> factory): not an outcome of a piece's own.
    /// </summary>
    private static bool RecordSettled<T>(CompletionQueue<Func<CancellationToken, Task<T>>, T>.Operation piece, ResultBuffer<Outcome<T>> results)
    {
        if (piece.LimiterFailed || piece.InputFailed)
        {
            return false;
        }

        results.Set(piece.Index, piece.Error is null ? Outcome<T>.FromValue(piece.Result) : Outcome<T>.FromException(piece.Error.SourceException));
        return true;
    }
}
