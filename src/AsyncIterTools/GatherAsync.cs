using System.Threading.RateLimiting;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once and
    /// returns their results in input order (Python's <c>asyncio.gather</c> with a concurrency limit).
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="work">
    /// Factories that start one piece of work each. Each receives a token that is cancelled when another piece fails or
    /// the caller cancels. The sequence is enumerated lazily, one element each time a slot frees up, and disposed.
    /// </param>
    /// <param name="maxConcurrency">The most pieces of work running at once; <see langword="null"/> for no limit.</param>
    /// <param name="cancellationToken">Cancels the gathering: no new work starts and running work sees its token cancelled.</param>
    /// <returns>The results, in the order of <paramref name="work"/> (not completion order).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrency"/> is zero or negative.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (thrown after the running work has finished).</exception>
    /// <exception cref="Exception">
    /// The first failure, in completion order, of a piece of work (a factory that throws, or a faulted or cancelled task),
    /// or of enumerating <paramref name="work"/>; thrown as is, not wrapped in an <see cref="AggregateException"/>.
    /// </exception>
    /// <remarks>
    /// <para>
    /// Work starts in input order. When a piece fails, the others' token is cancelled, nothing new starts, and the method
    /// waits for all running work to finish before it throws: when the returned task completes, in any way, no work is
    /// left running. Failures after the first are observed and dropped. Work that ignores its token is waited for. Work
    /// that fails after <paramref name="cancellationToken"/> cancelled it is reported as that cancellation, whatever it
    /// threw; a failure that came before is thrown as is ("before" as the method learns of it: a task that runs its
    /// continuations asynchronously and fails just before the cancellation may count as after it).
    /// </para>
    /// <para>
    /// Factories run in the gathering's own loop, with no lock held: the first ones inside this call, each later one when
    /// the loop resumes after a piece completed (on the caller's <see cref="SynchronizationContext"/>, if it had one),
    /// never inside the code that completed that piece. Each piece starts without waiting for earlier ones to complete.
    /// A factory that throws synchronously counts as a failed piece of work.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// Func&lt;CancellationToken, Task&lt;string&gt;&gt;[] work = urls.Select(u => (Func&lt;CancellationToken, Task&lt;string&gt;&gt;)(ct => http.GetStringAsync(u, ct))).ToArray();
    /// string[] pages = await AsyncIter.GatherAsync(work, maxConcurrency: 8, cancellationToken);
    /// </code>
    /// </example>
    public static Task<T[]> GatherAsync<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency = null,
        CancellationToken cancellationToken = default) =>
        GatherCore<T, T>(nameof(GatherAsync), work, maxConcurrency, limiter: null, timeProvider: null, RecordGathered, cancellationToken);

    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once, each
    /// while holding a lease of <paramref name="limiter"/>, and returns their results in input order.
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="work">
    /// Factories that start one piece of work each. Each receives a token that is cancelled when another piece fails or
    /// the caller cancels. The sequence is enumerated lazily, one element each time a slot frees up, and disposed.
    /// </param>
    /// <param name="maxConcurrency">
    /// The most pieces of work in flight at once, waiting for a lease included; <see langword="null"/> for no limit but the limiter's.
    /// </param>
    /// <param name="limiter">
    /// Grants one lease (<c>AcquireAsync(1)</c>) per piece before its factory runs; the lease is disposed when that piece
    /// ends. A rate (<see cref="TokenBucketRateLimiter"/>), a concurrency limit shared with other callers
    /// (<see cref="ConcurrencyLimiter"/>, a limiter across processes) or several at once (<see cref="RateLimiter.CreateChained"/>).
    /// </param>
    /// <param name="cancellationToken">Cancels the gathering: no new work starts and running work sees its token cancelled.</param>
    /// <returns>The results, in the order of <paramref name="work"/> (not completion order).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> or <paramref name="limiter"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrency"/> is zero or negative.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (thrown after the running work has finished).</exception>
    /// <exception cref="InvalidOperationException">
    /// <paramref name="limiter"/> refused a lease without <see cref="MetadataName.RetryAfter"/> metadata (that piece never
    /// started; thrown after the running work has finished).
    /// </exception>
    /// <exception cref="Exception">
    /// The first failure, in completion order, of a piece of work or of enumerating <paramref name="work"/>, thrown as is.
    /// </exception>
    /// <remarks>
    /// <para>
    /// As <see cref="GatherAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, CancellationToken)"/>, with the
    /// limiter on top of <paramref name="maxConcurrency"/>. Leases are asked for in input order. A refused lease that
    /// carries <see cref="MetadataName.RetryAfter"/> is asked for again after that delay (on
    /// <see cref="TimeProvider.System"/>; the overload with a <see cref="TimeProvider"/> takes another clock); one without
    /// it is a failure like a failed piece. Every lease acquired is disposed when its piece ends (success, failure or
    /// cancellation); when the returned task completes, none is held.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// using var partnerApi = new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 64, QueueLimit = int.MaxValue });
    /// string[] pages = await AsyncIter.GatherAsync(work, maxConcurrency: 8, partnerApi, cancellationToken);
    /// </code>
    /// </example>
    public static Task<T[]> GatherAsync<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency,
        RateLimiter limiter,
        CancellationToken cancellationToken = default) =>
        GatherAsync(work, maxConcurrency, limiter, timeProvider: null, cancellationToken);

    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once, each
    /// while holding a lease of <paramref name="limiter"/>, and returns their results in input order; waits after a
    /// refusal's <c>RetryAfter</c> on <paramref name="timeProvider"/>.
    /// </summary>
    /// <inheritdoc cref="GatherAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, RateLimiter, CancellationToken)" path="/typeparam"/>
    /// <param name="work">
    /// Factories that start one piece of work each. Each receives a token that is cancelled when another piece fails or
    /// the caller cancels. The sequence is enumerated lazily, one element each time a slot frees up, and disposed.
    /// </param>
    /// <param name="maxConcurrency">
    /// The most pieces of work in flight at once, waiting for a lease included; <see langword="null"/> for no limit but the limiter's.
    /// </param>
    /// <param name="limiter">Grants one lease per piece before its factory runs; the lease is disposed when that piece ends.</param>
    /// <param name="timeProvider">The clock of the waits after a refusal's <c>RetryAfter</c>; <see langword="null"/> for <see cref="TimeProvider.System"/>.</param>
    /// <param name="cancellationToken">Cancels the gathering: no new work starts and running work sees its token cancelled.</param>
    /// <returns>The results, in the order of <paramref name="work"/> (not completion order).</returns>
    /// <inheritdoc cref="GatherAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, RateLimiter, CancellationToken)" path="/exception"/>
    /// <remarks>Same semantics as <see cref="GatherAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, RateLimiter, CancellationToken)"/>.</remarks>
    public static Task<T[]> GatherAsync<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency,
        RateLimiter limiter,
        TimeProvider? timeProvider,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(limiter);
        return GatherCore<T, T>(nameof(GatherAsync), work, maxConcurrency, limiter, timeProvider, RecordGathered, cancellationToken);
    }

    /// <summary>GatherAsync's outcome rule: a value goes to its slot; a failure stops the gathering.</summary>
    private static bool RecordGathered<T>(CompletionQueue<Func<CancellationToken, Task<T>>, T>.Operation piece, ResultBuffer<T> results)
    {
        if (piece.Error is not null)
        {
            return false;
        }

        results.Set(piece.Index, piece.Result);
        return true;
    }

    /// <summary>Validates the arguments of GatherAsync and GatherSettledAsync (all but a limiter), then starts the gathering.</summary>
    private static Task<TOut[]> GatherCore<T, TOut>(
        string operatorName,
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency,
        RateLimiter? limiter,
        TimeProvider? timeProvider,
        Func<CompletionQueue<Func<CancellationToken, Task<T>>, T>.Operation, ResultBuffer<TOut>, bool> record,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(work);
        Arguments.ThrowIfInvalidMaxConcurrency(maxConcurrency);
        return GatherImplAsync(operatorName, work, maxConcurrency ?? int.MaxValue, limiter, timeProvider, record, cancellationToken);
    }

    /// <summary>
    /// Runs <paramref name="work"/> for GatherAsync and GatherSettledAsync: <paramref name="record"/> stores each completed
    /// piece's outcome, or returns false for a failure that stops the gathering (the first is thrown, after the drain).
    /// </summary>
    private static async Task<TOut[]> GatherImplAsync<T, TOut>(
        string operatorName,
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int maxConcurrency,
        RateLimiter? limiter,
        TimeProvider? timeProvider,
        Func<CompletionQueue<Func<CancellationToken, Task<T>>, T>.Operation, ResultBuffer<TOut>, bool> record,
        CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var results = new ResultBuffer<TOut>(ResultBuffer<TOut>.CountHint(work));
        // A failed piece stops the gathering, except in GatherSettledAsync, where it is one more outcome.
        bool stopsAtFailure = operatorName != nameof(GatherSettledAsync);
        using var running = new CompletionQueue<Func<CancellationToken, Task<T>>, T>(operatorName, WorkFactory.Start, cancellationToken, limiter, timeProvider, stopsAtFailure);
        IEnumerator<Func<CancellationToken, Task<T>>> inputs = work.GetEnumerator();
        ExceptionDispatchInfo? disposalFailure;
        try
        {
            running.StartMore(inputs, maxConcurrency, nameof(work));
            while (running.InFlight > 0)
            {
                CompletionQueue<Func<CancellationToken, Task<T>>, T>.Operation piece = await running.NextAsync();
                if (!record(piece, results))
                {
                    // Work failing after the caller cancelled is reported as the caller's cancellation below; a failure
                    // that came first is thrown, whatever came after.
                    if (piece.FailedAfterCancel && cancellationToken.IsCancellationRequested)
                    {
                        running.Cancel();
                    }
                    else
                    {
                        running.Fail(piece.Error!);
                    }
                }

                running.Return(piece);
                running.StartMore(inputs, maxConcurrency, nameof(work));
            }
        }
        finally
        {
            running.Cancel();
            await running.DrainAsync();
            disposalFailure = CompletionQueue<Func<CancellationToken, Task<T>>, T>.DisposeInputs(inputs);
        }

        running.Failure?.Throw();
        cancellationToken.ThrowIfCancellationRequested();
        disposalFailure?.Throw();
        return results.ToArray();
    }
}
