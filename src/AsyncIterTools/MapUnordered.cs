using System.Threading.RateLimiting;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Projects each element with an asynchronous <paramref name="selector"/>, running up to
    /// <paramref name="maxConcurrency"/> calls at once, and yields the results in completion order.
    /// </summary>
    /// <inheritdoc cref="Map{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int)" path="/typeparam"/>
    /// <inheritdoc cref="Map{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int)" path="/param"/>
    /// <returns>A sequence of the projected elements, in the order the calls complete.</returns>
    /// <inheritdoc cref="Map{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int)" path="/exception"/>
    /// <remarks>
    /// <para>
    /// Deferred. The source is pulled only when a slot is free (back-pressure), so at most
    /// <paramref name="maxConcurrency"/> calls are in flight and memory is O(<paramref name="maxConcurrency"/>). A finished
    /// call frees its slot at once, so one slow element never holds back the others, and is yielded at once, also while
    /// the source is still waiting for its next element.
    /// </para>
    /// <para>
    /// The first failure, in completion order, of a selector call or of the source cancels the calls in flight, awaits
    /// them, disposes the source and then surfaces. Disposing the enumerator early does the same: nothing is left running.
    /// The source is disposed exactly once.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// await foreach (Page page in urls.MapUnordered(async (url, ct) => await FetchAsync(url, ct), maxConcurrency: 16))
    /// {
    ///     Index(page); // whichever finishes first
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<TResult> MapUnordered<T, TResult>(this IAsyncEnumerable<T> source, Func<T, CancellationToken, ValueTask<TResult>> selector, int maxConcurrency) =>
        MapCore(source, selector, maxConcurrency, limiter: null, timeProvider: null, ordered: false);

    /// <summary>
    /// Projects each element with an asynchronous <paramref name="selector"/>, running up to
    /// <paramref name="maxConcurrency"/> calls at once, each while holding a lease of <paramref name="limiter"/>, and
    /// yields the results in completion order.
    /// </summary>
    /// <inheritdoc cref="Map{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int, RateLimiter, TimeProvider?)" path="/typeparam"/>
    /// <inheritdoc cref="Map{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int, RateLimiter, TimeProvider?)" path="/param"/>
    /// <returns>A sequence of the projected elements, in the order the calls complete.</returns>
    /// <inheritdoc cref="Map{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int, RateLimiter, TimeProvider?)" path="/exception"/>
    /// <remarks>
    /// As <see cref="MapUnordered{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int)"/>,
    /// with the limiter on top of <paramref name="maxConcurrency"/>; the limiter's rules (retry after
    /// <see cref="MetadataName.RetryAfter"/>, a refusal without it fails the enumeration with an
    /// <see cref="InvalidOperationException"/>, every lease disposed) are those of
    /// <see cref="Map{T, TResult}(IAsyncEnumerable{T}, Func{T, CancellationToken, ValueTask{TResult}}, int, RateLimiter, TimeProvider?)"/>.
    /// </remarks>
    /// <example>
    /// <code>
    /// // One limit for every instance of the service, on top of 16 calls in flight here.
    /// RateLimiter global = coordinator.CreateSemaphore("partner-api", maxCount: 64).AsRateLimiter();
    /// await foreach (Page page in urls.MapUnordered(async (url, ct) => await FetchAsync(url, ct), maxConcurrency: 16, global))
    /// {
    ///     Index(page);
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<TResult> MapUnordered<T, TResult>(
        this IAsyncEnumerable<T> source,
        Func<T, CancellationToken, ValueTask<TResult>> selector,
        int maxConcurrency,
        RateLimiter limiter,
        TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(limiter);
        return MapCore(source, selector, maxConcurrency, limiter, timeProvider, ordered: false);
    }
}
