namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Splits <paramref name="source"/> into <paramref name="count"/> independent copies that each yield every item,
    /// while the source is enumerated only once (Python's <c>itertools.tee</c>).
    /// </summary>
    /// <typeparam name="T">The type of the elements.</typeparam>
    /// <param name="source">The sequence to split.</param>
    /// <param name="count">The number of copies.</param>
    /// <param name="maxBuffer">
    /// The most items read from the source and not yet consumed by every copy; <see langword="null"/> for unbounded.
    /// A copy that gets this far ahead of the slowest copy waits for it (back-pressure).
    /// </param>
    /// <returns>An array of <paramref name="count"/> sequences.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="count"/> is negative, or <paramref name="maxBuffer"/> is zero or negative.
    /// </exception>
    /// <remarks>
    /// <para>
    /// Any copy may be read first and at any pace, from any thread (copies may be read concurrently). The source is
    /// enumerated once, lazily, on the first <c>MoveNextAsync</c> of any copy; items are kept until every copy has passed
    /// them. Unbounded, reading one copy to the end before the others buffers the whole source. With
    /// <paramref name="maxBuffer"/> the copies must be read concurrently: reading one to the end first waits forever for
    /// the others.
    /// </para>
    /// <para>
    /// A source error reaches every copy at the same position: each throws it after the items before it. The token passed
    /// to a copy's <c>GetAsyncEnumerator</c> cancels that copy's waits only; the source gets a token of its own, cancelled
    /// when the last copy is disposed during a pending read. Disposing a copy early detaches it (it no longer holds back the
    /// others); the source is disposed exactly once, when the last copy is disposed. A copy that is never enumerated never
    /// detaches, so it keeps every item buffered and the source open.
    /// </para>
    /// <para>
    /// Each copy can be enumerated once: a second <c>GetAsyncEnumerator</c> on the same copy throws
    /// <see cref="InvalidOperationException"/>.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// IAsyncEnumerable&lt;int&gt;[] copies = source.Tee(2);
    /// int[] second = await copies[1].ToArrayAsync(); // read the second copy first
    /// int[] first = await copies[0].ToArrayAsync();  // the same items
    /// </code>
    /// </example>
    public static IAsyncEnumerable<T>[] Tee<T>(this IAsyncEnumerable<T> source, int count = 2, int? maxBuffer = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (maxBuffer is { } max)
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(max, nameof(maxBuffer));
        }

        var buffer = new TeeBuffer<T>(source, count, maxBuffer);
        var copies = new IAsyncEnumerable<T>[count];
        for (int i = 0; i < count; i++)
        {
            copies[i] = new TeeCopy<T>(buffer, i, buffer.Start);
        }

        buffer.ReleaseStart();

        return copies;
    }
}
