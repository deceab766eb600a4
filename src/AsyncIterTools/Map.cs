using System.Threading.RateLimiting;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Projects each element with an asynchronous <paramref name="selector"/>, running up to
    /// <paramref name="maxConcurrency"/> calls at once, and yields the results in source order.
    /// </summary>
    /// <typeparam name="T">The type of the source elements.</typeparam>
    /// <typeparam name="TResult">The type of the results.</typeparam>
    /// <param name="source">The sequence to project.</param>
    /// <param name="selector">
    /// The projection; it receives a token that is cancelled when the enumeration fails, is disposed early, or the token
    /// from <c>WithCancellation</c> is cancelled.
    /// </param>
    /// <param name="maxConcurrency">The most selector calls in flight at once.</param>
    /// <returns>A sequence of the projected elements, in the order of <paramref name="source"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="selector"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrency"/> is zero or negative.</exception>
    /// <remarks>
    /// <para>
    /// Deferred. The source is pulled only when a slot is free (back-pressure): at most <paramref name="maxConcurrency"/>
    /// elements are started and not yet yielded, so memory is O(<paramref name="maxConcurrency"/>): results that complete
    /// out of order wait only inside that window. A slow element at the head of the window therefore delays the next
    /// starts; use <see cref="MapUnordered{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int)"/>
    /// when order does not matter. A result whose turn has come is yielded at once, also while the source is still
    /// waiting for its next element.
    /// </para>
    /// <para>
    /// The first failure, in completion order, of a selector call or of the source cancels the calls in flight, awaits
    /// them, disposes the source and then surfaces from <c>MoveNextAsync</c>. Disposing the enumerator early does the same
    /// (cancel, await, dispose): nothing is left running. The source is disposed exactly once.
    /// </para>
    /// <para>
    /// Only an asynchronous selector is offered: a synchronous one would run inline with no concurrency to gain
    /// (use <c>Select</c>).
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// await foreach (User user in ids.Map(async (id, ct) => await api.GetUserAsync(id, ct), maxConcurrency: 8))
    /// {
    ///     Console.WriteLine(user.Name); // in the order of ids
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<TResult> Map<T, TResult>(this IAsyncEnumerable<T> source, Func<T, CancellationToken, ValueTask<TResult>> selector, int maxConcurrency) =>
        MapCore(source, selector, maxConcurrency, limiter: null, timeProvider: null, ordered: true);

    /// <summary>
    /// Projects each element with an asynchronous <paramref name="selector"/>, running up to
    /// <paramref name="maxConcurrency"/> calls at once, each while holding a lease of <paramref name="limiter"/>, and
    /// yields the results in source order.
    /// </summary>
    /// <typeparam name="T">The type of the source elements.</typeparam>
    /// <typeparam name="TResult">The type of the results.</typeparam>
    /// <param name="source">The sequence to project.</param>
    /// <param name="selector">
    /// The projection; it receives a token that is cancelled when the enumeration fails, is disposed early, or the token
    /// from <c>WithCancellation</c> is cancelled.
    /// </param>
    /// <param name="maxConcurrency">The most selector calls in flight at once, waiting for a lease included.</param>
    /// <param name="limiter">
    /// Grants one lease (<c>AcquireAsync(1)</c>) per element before its selector call starts; the lease is disposed when
    /// that call ends. A rate (<see cref="TokenBucketRateLimiter"/>), a concurrency limit shared with other pipelines
    /// (<see cref="ConcurrencyLimiter"/>, a limiter across processes) or several at once (<see cref="RateLimiter.CreateChained"/>).
    /// </param>
    /// <param name="timeProvider">The clock of the waits after a refusal's <c>RetryAfter</c>; <see langword="null"/> for <see cref="TimeProvider.System"/>.</param>
    /// <returns>A sequence of the projected elements, in the order of <paramref name="source"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/>, <paramref name="selector"/> or <paramref name="limiter"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrency"/> is zero or negative.</exception>
    /// <remarks>
    /// <para>
    /// As <see cref="Map{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int)"/>, with the
    /// limiter on top of <paramref name="maxConcurrency"/>: an element whose call waits for its lease holds its slot, so
    /// the source is still read only as slots free up. Leases are asked for in source order.
    /// </para>
    /// <para>
    /// A refused lease (<see cref="RateLimitLease.IsAcquired"/> false) that carries <see cref="MetadataName.RetryAfter"/> is
    /// asked for again after that delay. One without it fails the enumeration with an
    /// <see cref="InvalidOperationException"/> naming the limiter; that element's selector never runs. Every lease
    /// acquired is disposed, whatever ends the call (success, failure, cancellation, or the consumer breaking out of its
    /// loop), and none is held once the enumeration has ended. The operator never holds more leases than it has selector
    /// calls running.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// using var perSecond = new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
    /// {
    ///     TokenLimit = 100, TokensPerPeriod = 100, ReplenishmentPeriod = TimeSpan.FromSeconds(1), QueueLimit = 1_000,
    /// });
    /// await foreach (User user in ids.Map(async (id, ct) => await api.GetUserAsync(id, ct), maxConcurrency: 32, perSecond))
    /// {
    ///     Console.WriteLine(user.Name); // in the order of ids; at most 32 calls in flight and 100 started per second
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<TResult> Map<T, TResult>(
        this IAsyncEnumerable<T> source,
        Func<T, CancellationToken, ValueTask<TResult>> selector,
        int maxConcurrency,
        RateLimiter limiter,
        TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(limiter);
        return MapCore(source, selector, maxConcurrency, limiter, timeProvider, ordered: true);
    }

    /// <summary>Validates the arguments of Map and MapUnordered (all but a limiter), then returns the deferred projection.</summary>
    private static IAsyncEnumerable<TResult> MapCore<T, TResult>(
        IAsyncEnumerable<T> source,
        Func<T, CancellationToken, ValueTask<TResult>> selector,
        int maxConcurrency,
        RateLimiter? limiter,
        TimeProvider? timeProvider,
        bool ordered)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(selector);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxConcurrency);
        return MapImpl(source, selector, maxConcurrency, limiter, timeProvider, ordered);
    }

    private static async IAsyncEnumerable<TResult> MapImpl<T, TResult>(
        IAsyncEnumerable<T> source,
        Func<T, CancellationToken, ValueTask<TResult>> selector,
        int maxConcurrency,
        RateLimiter? limiter,
        TimeProvider? timeProvider,
        bool ordered,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var calls = new CompletionQueue<T, TResult>(ordered ? nameof(Map) : nameof(MapUnordered), selector, cancellationToken, limiter, timeProvider);

        // Ordered: the started, not yet yielded calls in source order (Count <= maxConcurrency). Unordered: unused.
        Queue<CompletionQueue<T, TResult>.Operation>? window = ordered ? new Queue<CompletionQueue<T, TResult>.Operation>() : null;
        IAsyncEnumerator<T> enumerator;
        try
        {
            enumerator = source.GetAsyncEnumerator(calls.Token);
        }
        catch (Exception ex) when (cancellationToken.IsCancellationRequested)
        {
            throw calls.SourceFailure(ex); // the token rule, also for a source that fails to open
        }

        bool sourceDone = false;

        // Where the finally finds the body: at a yield (the consumer left early), at its end, or neither (a failure is
        // leaving it, and it is the first: the source's disposal comes after it).
        bool atYield = false;
        bool ended = false;
        try
        {
            while (true)
            {
                // Honoured here too, not only through the token the source and selector get: they may ignore it.
                cancellationToken.ThrowIfCancellationRequested();
                sourceDone = Fill(enumerator, calls, window, maxConcurrency, sourceDone);
                CompletionQueue<T, TResult>.Operation completed;
                if (window is not null && window.Count > 0 && window.Peek().IsDone)
                {
                    completed = window.Dequeue();
                }
                else
                {
                    if (calls.InFlight == 0 && !calls.IsMoving)
                    {
                        ended = true;
                        break;
                    }

                    // The next call to complete, or the source's next element, whichever comes first; nothing is handed out
                    // (or started) once the caller has cancelled meanwhile.
                    completed = await calls.NextAsync();
                    if (calls.IsMoveSignal(completed))
                    {
                        bool more = calls.TakeMove(); // read also when cancelled: its outcome is observed
                        cancellationToken.ThrowIfCancellationRequested();
                        if (more)
                        {
                            if (!calls.HasUntakenFailure)
                            {
                                _ = TryStart(enumerator, calls, window);
                            }

                            // else: not started, nor ever will be: the failure waiting is taken next, and thrown.
                        }
                        else
                        {
                            sourceDone = true;
                        }

                        continue;
                    }

                    cancellationToken.ThrowIfCancellationRequested();
                    if (window is not null)
                    {
                        // Failures surface in completion order, even one behind the head of the window; a value waits
                        // in the window for its turn.
                        completed.Error?.Throw();
                        continue;
                    }
                }

                TResult result = completed.GetResult();
                calls.Return(completed);

                // Refill before yielding, so the window stays busy while the consumer works; the refill ran user code
                // (the source, a selector) that may have cancelled the token.
                sourceDone = Fill(enumerator, calls, window, maxConcurrency, sourceDone);
                cancellationToken.ThrowIfCancellationRequested();
                atYield = true;
                yield return result;
                atYield = false;
            }
        }
        finally
        {
            // Failure, early disposal or cancellation: stop the calls in flight (and a pending move of the source) and wait
            // for them before the source goes.
            bool failing = !atYield && !ended;
            bool leftAfterCancelling = atYield && cancellationToken.IsCancellationRequested; // read as the consumer leaves
            if (!ended)
            {
                calls.Cancel(); // not at the end: nothing runs then, and the source disposes with its token as it was
            }

            await calls.DrainAsync();
            ExceptionDispatchInfo? disposalFailure = null;
            try
            {
                await enumerator.DisposeAsync();
            }
            catch (Exception ex) when (ex.IsGivingWayTo(calls.Token))
            {
                // The source's clean-up gave way to its token, cancelled by this operator (the consumer left, a failure)
                // or the caller: not a failure of its own (the token rule below decides).
            }
            catch (Exception ex)
            {
                disposalFailure = ExceptionDispatchInfo.Capture(ex);
            }

            // The token rule of the lazy operators: once cancelled, an enumeration ending through the consumer's move
            // ends as the cancellation, also when a failure taken before it is leaving the body (its running calls were
            // awaited meanwhile) or the source ended.
            if (!atYield)
            {
                cancellationToken.ThrowIfCancellationRequested();
            }

            // The source's disposal failed: unless a failure is leaving the body (the first one surfaces), or the consumer
            // cancelled and then left at a yield (it asked to stop: the failure is dropped, as the read-ahead operators
            // drop it; a cancellation after it left hides nothing).
            if (!failing && !leftAfterCancelling)
            {
                disposalFailure?.Throw();
            }
        }
    }

    /// <summary>
    /// Pulls the source and starts selector calls until the window is full, the source ends (returns true), a call has
    /// failed (the failure is taken next, and nothing starts after it) or the source's <c>MoveNextAsync</c> does not
    /// succeed at once: that move then races the calls in flight (<see cref="CompletionQueue{TArg, TResult}.AwaitMove"/>),
    /// so a result that is ready never waits for the source.
    /// </summary>
    private static bool Fill<T, TResult>(
        IAsyncEnumerator<T> enumerator,
        CompletionQueue<T, TResult> calls,
        Queue<CompletionQueue<T, TResult>.Operation>? window,
        int maxConcurrency,
        bool sourceDone)
    {
        while (!sourceDone && !calls.IsMoving && !calls.HasUntakenFailure && HasRoom(calls, window, maxConcurrency))
        {
            ValueTask<bool> move;
            try
            {
                move = enumerator.MoveNextAsync();
            }
            catch (Exception ex)
            {
                move = new ValueTask<bool>(Task.FromException<bool>(ex));
            }

            // A move that failed, even at once, takes its place in the completion order: behind calls that completed
            // before it, whose results are yielded first (as when the source fails later).
            if (!move.IsCompletedSuccessfully)
            {
                calls.AwaitMove(move);
                return false;
            }

            if (!calls.MoveOutcome(move))
            {
                return true;
            }

            if (!TryStart(enumerator, calls, window))
            {
                return false;
            }
        }

        return sourceDone;
    }

    /// <summary>Whether the window (ordered) or the number of calls in flight (unordered) leaves room for another call.</summary>
    private static bool HasRoom<T, TResult>(CompletionQueue<T, TResult> calls, Queue<CompletionQueue<T, TResult>.Operation>? window, int maxConcurrency) =>
        (window?.Count ?? calls.InFlight) < maxConcurrency;

    /// <summary>
    /// Starts a selector call for the enumerator's current item and, when ordered, appends it to the window. A
    /// <c>Current</c> that throws is a failed move of the source (false): it takes its place in the completion order,
    /// behind calls that completed before it, as a <c>MoveNextAsync</c> that throws does.
    /// </summary>
    private static bool TryStart<T, TResult>(
        IAsyncEnumerator<T> enumerator,
        CompletionQueue<T, TResult> calls,
        Queue<CompletionQueue<T, TResult>.Operation>? window)
    {
        T item;
        try
        {
            item = enumerator.Current;
        }
        catch (Exception ex)
        {
            calls.AwaitMove(new ValueTask<bool>(Task.FromException<bool>(ex)));
            return false;
        }

        CompletionQueue<T, TResult>.Operation call = calls.Start(item);
        window?.Enqueue(call);
        return true;
    }
}
