using System.Threading.RateLimiting;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once and
    /// yields each result as soon as it is available, in completion order (Python's <c>asyncio.as_completed</c>).
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="work">
    /// Factories that start one piece of work each; each receives a token cancelled when the enumeration ends early,
    /// fails, times out or is cancelled. Enumerated lazily (one element each time a slot frees up) and disposed.
    /// </param>
    /// <param name="maxConcurrency">The most pieces of work running at once; <see langword="null"/> for no limit.</param>
    /// <param name="timeout">
    /// One overall deadline for the whole enumeration, measured from its first <c>MoveNextAsync</c>;
    /// <see langword="null"/> or <see cref="Timeout.InfiniteTimeSpan"/> for none.
    /// </param>
    /// <returns>A sequence of the results in the order the work completes.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="maxConcurrency"/> is zero or negative, or <paramref name="timeout"/> is negative and not infinite, or longer than about 49.7 days (4294967294 ms).
    /// </exception>
    /// <remarks>
    /// <para>Deferred: nothing starts until the sequence is enumerated. Work starts lazily, in input order.</para>
    /// <para>
    /// A failure surfaces when it is reached in completion order: the other work is cancelled and awaited, then the
    /// exception is thrown from <c>MoveNextAsync</c>. When the deadline passes, running work is cancelled at once and
    /// nothing new starts; results that completed before it are still yielded, then the cancelled work is awaited and a
    /// <see cref="TimeoutException"/> is thrown (not when the deadline passes after the last result was handed out: that
    /// cut nothing short). Breaking out of the loop (disposing the enumerator) cancels and awaits
    /// what is still running. The token from <c>WithCancellation</c> is linked into every work item's token; the
    /// enumeration then throws <see cref="OperationCanceledException"/>, again after the running work finished, also when
    /// a piece failed meanwhile. Work that fails after the deadline cancelled it is reported as the timeout, whatever it
    /// threw; a failure that came before the deadline is thrown as is.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// await foreach (string page in AsyncIter.AsCompleted(work, maxConcurrency: 4, timeout: TimeSpan.FromSeconds(30)))
    /// {
    ///     Console.WriteLine(page.Length);
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<T> AsCompleted<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency = null,
        TimeSpan? timeout = null) =>
        AsCompleted(work, maxConcurrency, timeout, TimeProvider.System);

    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once and
    /// yields each result in completion order, measuring <paramref name="timeout"/> with <paramref name="timeProvider"/>.
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="work">Factories that start one piece of work each (see the overload without a time provider).</param>
    /// <param name="maxConcurrency">The most pieces of work running at once; <see langword="null"/> for no limit.</param>
    /// <param name="timeout">One overall deadline; <see langword="null"/> or <see cref="Timeout.InfiniteTimeSpan"/> for none.</param>
    /// <param name="timeProvider">The clock for <paramref name="timeout"/>; <see langword="null"/> for <see cref="TimeProvider.System"/>.</param>
    /// <returns>A sequence of the results in the order the work completes.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="maxConcurrency"/> is zero or negative, or <paramref name="timeout"/> is negative and not infinite, or longer than about 49.7 days (4294967294 ms).
    /// </exception>
    /// <remarks>Same semantics as <see cref="AsCompleted{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, TimeSpan?)"/>.</remarks>
    public static IAsyncEnumerable<T> AsCompleted<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency,
        TimeSpan? timeout,
        TimeProvider? timeProvider) =>
        AsCompletedCore(work, maxConcurrency, limiter: null, timeout, timeProvider);

    /// <summary>
    /// Runs every piece of <paramref name="work"/> with at most <paramref name="maxConcurrency"/> running at once, each
    /// while holding a lease of <paramref name="limiter"/>, and yields each result in completion order.
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="work">
    /// Factories that start one piece of work each; each receives a token cancelled when the enumeration ends early,
    /// fails, times out or is cancelled. Enumerated lazily (one element each time a slot frees up) and disposed.
    /// </param>
    /// <param name="maxConcurrency">
    /// The most pieces of work in flight at once, waiting for a lease included; <see langword="null"/> for no limit but the limiter's.
    /// </param>
    /// <param name="limiter">
    /// Grants one lease (<c>AcquireAsync(1)</c>) per piece before its factory runs; the lease is disposed when that piece
    /// ends. A rate (<see cref="TokenBucketRateLimiter"/>), a concurrency limit shared with other callers
    /// (<see cref="ConcurrencyLimiter"/>, a limiter across processes) or several at once (<see cref="RateLimiter.CreateChained"/>).
    /// </param>
    /// <param name="timeout">
    /// One overall deadline for the whole enumeration, measured from its first <c>MoveNextAsync</c> (waits for leases
    /// included); <see langword="null"/> or <see cref="Timeout.InfiniteTimeSpan"/> for none.
    /// </param>
    /// <param name="timeProvider">
    /// The clock for <paramref name="timeout"/> and for the waits after a refusal's <c>RetryAfter</c>;
    /// <see langword="null"/> for <see cref="TimeProvider.System"/>.
    /// </param>
    /// <returns>A sequence of the results in the order the work completes.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="work"/> or <paramref name="limiter"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="maxConcurrency"/> is zero or negative, or <paramref name="timeout"/> is negative and not infinite, or longer than about 49.7 days (4294967294 ms).
    /// </exception>
    /// <remarks>
    /// <para>
    /// As <see cref="AsCompleted{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, TimeSpan?, TimeProvider?)"/>, with
    /// the limiter on top of <paramref name="maxConcurrency"/>. Leases are asked for in input order.
    /// </para>
    /// <para>
    /// A refused lease that carries <see cref="MetadataName.RetryAfter"/> is asked for again after that delay. One without
    /// it fails the enumeration with an <see cref="InvalidOperationException"/> naming the limiter, when it is reached in
    /// completion order; that piece never starts. Every lease acquired is disposed when its piece ends (success, failure,
    /// cancellation, the deadline, or the consumer breaking out of its loop), and none is held once the enumeration has ended.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// RateLimiter limiter = RateLimiter.CreateChained(perSecond, global);
    /// await foreach (string page in AsyncIter.AsCompleted(work, maxConcurrency: 32, limiter, timeout: TimeSpan.FromMinutes(5)))
    /// {
    ///     Console.WriteLine(page.Length);
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<T> AsCompleted<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency,
        RateLimiter limiter,
        TimeSpan? timeout = null,
        TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(limiter);
        return AsCompletedCore(work, maxConcurrency, limiter, timeout, timeProvider);
    }

    /// <summary>
    /// Yields the results of already running <paramref name="tasks"/> in the order they complete.
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="tasks">The tasks; enumerated completely on the first <c>MoveNextAsync</c>.</param>
    /// <param name="timeout">One overall deadline; <see langword="null"/> or <see cref="Timeout.InfiniteTimeSpan"/> for none.</param>
    /// <returns>A sequence of the results in completion order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tasks"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative and not infinite, or longer than about 49.7 days (4294967294 ms).</exception>
    /// <remarks>
    /// The operator does not own these tasks, so it cannot cancel them: on a failure, a timeout
    /// (<see cref="TimeoutException"/>), cancellation or an early break it stops waiting and returns, leaving them running
    /// with nothing of the enumeration attached to them (as <c>Task.WhenAny</c> leaves the tasks that lost).
    /// Failures of tasks it never reached are observed (they never raise <see cref="TaskScheduler.UnobservedTaskException"/>),
    /// also when its token was cancelled before the first <c>MoveNextAsync</c>: every task is read even then.
    /// </remarks>
    /// <example>
    /// <code>
    /// Task&lt;int&gt;[] tasks = { SlowAsync(), FastAsync() };
    /// await foreach (int value in AsyncIter.AsCompleted(tasks))
    /// {
    ///     Console.WriteLine(value); // FastAsync's result first
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<T> AsCompleted<T>(IEnumerable<Task<T>> tasks, TimeSpan? timeout = null) =>
        AsCompleted(tasks, timeout, TimeProvider.System);

    /// <summary>
    /// Yields the results of already running <paramref name="tasks"/> in completion order, measuring
    /// <paramref name="timeout"/> with <paramref name="timeProvider"/>.
    /// </summary>
    /// <typeparam name="T">The type of each result.</typeparam>
    /// <param name="tasks">The tasks; enumerated completely on the first <c>MoveNextAsync</c>.</param>
    /// <param name="timeout">One overall deadline; <see langword="null"/> or <see cref="Timeout.InfiniteTimeSpan"/> for none.</param>
    /// <param name="timeProvider">The clock for <paramref name="timeout"/>; <see langword="null"/> for <see cref="TimeProvider.System"/>.</param>
    /// <returns>A sequence of the results in completion order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tasks"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative and not infinite, or longer than about 49.7 days (4294967294 ms).</exception>
    /// <remarks>Same semantics as <see cref="AsCompleted{T}(IEnumerable{Task{T}}, TimeSpan?)"/>.</remarks>
    public static IAsyncEnumerable<T> AsCompleted<T>(IEnumerable<Task<T>> tasks, TimeSpan? timeout, TimeProvider? timeProvider)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        TimeoutArgument.ThrowIfInvalid(timeout);
        return AsCompletedImpl(tasks, GivenTask<T>.WaitFor, nameof(tasks), int.MaxValue, limiter: null, ownsWork: false, timeout, timeProvider ?? TimeProvider.System);
    }

    /// <summary>Validates the arguments of AsCompleted over work (all but a limiter), then returns the deferred sequence.</summary>
    private static IAsyncEnumerable<T> AsCompletedCore<T>(
        IEnumerable<Func<CancellationToken, Task<T>>> work,
        int? maxConcurrency,
        RateLimiter? limiter,
        TimeSpan? timeout,
        TimeProvider? timeProvider)
    {
        ArgumentNullException.ThrowIfNull(work);
        Arguments.ThrowIfInvalidMaxConcurrency(maxConcurrency);
        TimeoutArgument.ThrowIfInvalid(timeout);
        return AsCompletedImpl(work, WorkFactory.Start, nameof(work), maxConcurrency ?? int.MaxValue, limiter, ownsWork: true, timeout, timeProvider ?? TimeProvider.System);
    }

    private static async IAsyncEnumerable<T> AsCompletedImpl<TArg, T>(
        IEnumerable<TArg> inputs,
        Func<TArg, CancellationToken, ValueTask<T>> start,
        string inputsName,
        int maxConcurrency,
        RateLimiter? limiter,
        bool ownsWork,
        TimeSpan? timeout,
        TimeProvider timeProvider,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        // Tasks it does not own are read (and so observed) also when the token is cancelled already; the enumeration
        // then ends as the cancellation below, having yielded nothing.
        if (ownsWork)
        {
            cancellationToken.ThrowIfCancellationRequested();
        }

        Deadline deadline;
        try
        {
            deadline = new Deadline(timeout, timeProvider);
        }
        catch (Exception) when (!ownsWork)
        {
            // The clock could not arm the deadline: the tasks are still read, so that their failures are observed; once
            // cancelled, the enumeration ends as the cancellation (the token rule).
            ObserveGivenTasks(inputs);
            cancellationToken.ThrowIfCancellationRequested();
            throw;
        }

        using Deadline disposeDeadline = deadline;
        using var running = new CompletionQueue<TArg, T>(nameof(AsCompleted), start, cancellationToken, limiter, timeProvider);

        // Work it owns is cancelled when the deadline passes, not when the consumer next looks: nothing new starts after it.
        // Tasks it does not own are let go of then (once all are read: one already complete came before the deadline), so
        // a value that comes after the deadline is not yielded.
        CancellationTokenRegistration stopAtDeadline = ownsWork ? StopAtDeadline(deadline, running) : default;

        // Tasks the operator does not own are not awaited on exit, so waiting for them must also end on cancellation.
        using CancellationTokenSource? waitCts = ownsWork ? null : CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, cancellationToken);
        CancellationToken waitToken = waitCts?.Token ?? deadline.Token;
        // Whether the deadline cut the enumeration short, as far as the loop can tell: it stopped before the end, or it
        // handed its last result out after the deadline had passed. (Inputs left unread count too: see below.)
        bool cutShort = false;

        // True while the consumer has a result (between a yield and the next move): a disposal then is an early one.
        bool atYield = false;
        ExceptionDispatchInfo? disposalFailure;
        IEnumerator<TArg> pending;
        try
        {
            pending = inputs.GetEnumerator();
        }
        catch (Exception ex) when (cancellationToken.IsCancellationRequested)
        {
            throw running.SourceFailure(ex); // the token rule, also for a sequence that fails to open
        }

        try
        {
            running.StartMore(pending, maxConcurrency, inputsName, startsWork: ownsWork);
            if (!ownsWork)
            {
                stopAtDeadline = StopAtDeadline(deadline, running);
            }

            while (running.InFlight > 0 && running.Failure is null)
            {
                // Work it owns, once the deadline has passed, is cancelled and awaited here: a result that came before the
                // deadline may be taken only now (its end waited for its lease to go back), and is still yielded.
                CompletionQueue<TArg, T>.Operation? next = ownsWork && deadline.IsExpired
                    ? await running.NextAsync()
                    : await NextOrTimeoutAsync(running, waitToken);
                if (next is null)
                {
                    // Deadline passed or (for tasks we do not own) the caller cancelled; reported after the drain.
                    cutShort = true;
                    running.Cancel();
                    if (!ownsWork)
                    {
                        break;
                    }

                    continue;
                }

                if (ownsWork && next.EndedAfterCancel && deadline.IsExpired && !cancellationToken.IsCancellationRequested)
                {
                    // Work that ended after the deadline cancelled it: a value is dropped, as nothing after the deadline
                    // counts, and a failure (whatever it threw for it) is the timeout; the rest is still awaited here.
                    cutShort = true;
                    running.Return(next);
                    continue;
                }

                ExceptionDispatchInfo? error = next.Error;
                bool timedOut = next.FailedAfterCancel && deadline.IsExpired;
                T value = next.Result;
                running.Return(next);
                if (error is not null || cancellationToken.IsCancellationRequested)
                {
                    // Once the caller has cancelled, the enumeration ends as the cancellation (as every lazy operator does);
                    // work failing after the deadline cancelled it (whatever it threw for it) is the timeout; any other
                    // failure, also one that came before the deadline, is thrown as is. Both after the drain.
                    if (error is not null && !timedOut && !cancellationToken.IsCancellationRequested)
                    {
                        running.Fail(error);
                    }

                    cutShort = true;
                    running.Cancel();
                    break;
                }

                // Starting more ran user code (work factories) that may have cancelled the token.
                running.StartMore(pending, maxConcurrency, inputsName, startsWork: ownsWork);
                cancellationToken.ThrowIfCancellationRequested();
                cutShort = deadline.IsExpired;
                atYield = true;
                yield return value;
                atYield = false;
            }
        }
        finally
        {
            bool leftAfterCancelling = atYield && cancellationToken.IsCancellationRequested; // read as the consumer leaves
            stopAtDeadline.Dispose();
            running.Cancel();
            if (ownsWork)
            {
                // A failure that came before the deadline, taken only now (its post waited for its lease to go back), is
                // still thrown as itself.
                await running.DrainAsync(keepFailureBeforeCancel: true);
            }

            if (!ownsWork && running.StoppedAtNullElement)
            {
                // Reading stopped at a null element: the tasks after it are still observed. (Not after a failure of the
                // sequence itself: reading on could run more of it, as a Select that starts a task per element.)
                ObserveRestOfGivenTasks(pending);
            }

            disposalFailure = CompletionQueue<TArg, T>.DisposeInputs(pending);
            if (atYield && !leftAfterCancelling)
            {
                // Disposed early (a break): the inputs' disposal failure surfaces from DisposeAsync, unless the consumer
                // cancelled and then left.
                disposalFailure?.Throw();
            }
        }

        // The token rule of the lazy operators: once cancelled, the enumeration ends as the cancellation, whatever failed.
        cancellationToken.ThrowIfCancellationRequested();
        running.Failure?.Throw();

        // A deadline that passed after the last result was handed out (the consumer still at work on it), with nothing
        // left to start, cut nothing short.
        if (deadline.IsExpired && (cutShort || !running.InputsExhausted))
        {
            throw new TimeoutException($"AsCompleted did not complete within {timeout}.");
        }

        disposalFailure?.Throw();
    }

    /// <summary>Cancels <paramref name="running"/> when <paramref name="deadline"/> passes (at once if it has).</summary>
    private static CancellationTokenRegistration StopAtDeadline<TArg, T>(Deadline deadline, CompletionQueue<TArg, T> running) =>
        deadline.Token.RegisterNoFlow(static s => ((CompletionQueue<TArg, T>)s!).Cancel(), running);

    /// <summary>Returns the next completion, or null if <paramref name="waitToken"/> ended the wait first.</summary>
    private static ValueTask<CompletionQueue<TArg, T>.Operation?> NextOrTimeoutAsync<TArg, T>(CompletionQueue<TArg, T> running, CancellationToken waitToken)
    {
        ValueTask<CompletionQueue<TArg, T>.Operation> next = running.NextAsync(waitToken);
        return next.IsCompletedSuccessfully
            ? new ValueTask<CompletionQueue<TArg, T>.Operation?>(next.Result)
            : AwaitNextOrTimeoutAsync(next, waitToken);
    }

    private static async ValueTask<CompletionQueue<TArg, T>.Operation?> AwaitNextOrTimeoutAsync<TArg, T>(
        ValueTask<CompletionQueue<TArg, T>.Operation> next,
        CancellationToken waitToken)
    {
        try
        {
            return await next;
        }
        catch (OperationCanceledException) when (waitToken.IsCancellationRequested)
        {
            return null;
        }
    }
}
