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
    /// call frees its slot at once, so one slow element never holds back the others.
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
        MapCore(source, selector, maxConcurrency, ordered: false);
}
