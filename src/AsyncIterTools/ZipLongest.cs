namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Pairs up the items of two sequences until both have ended, filling in for the shorter one (Python's
    /// <c>itertools.zip_longest(first, second)</c> with a fill value per side).
    /// </summary>
    /// <typeparam name="T1">The type of the first sequence's items.</typeparam>
    /// <typeparam name="T2">The type of the second sequence's items.</typeparam>
    /// <param name="first">The first sequence.</param>
    /// <param name="second">The second sequence.</param>
    /// <param name="firstFill">Stands in for <paramref name="first"/>'s items once it has ended.</param>
    /// <param name="secondFill">Stands in for <paramref name="second"/>'s items once it has ended.</param>
    /// <returns>As many pairs as the longer sequence has items.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="first"/> or <paramref name="second"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. Each step advances <paramref name="first"/>, then <paramref name="second"/>; a sequence
    /// that has ended is disposed at once and not read again. Both are enumerated with the enumeration token; one still
    /// open is disposed when the enumeration ends, stops early, or fails.
    /// </remarks>
    public static IAsyncEnumerable<(T1, T2)> ZipLongest<T1, T2>(IAsyncEnumerable<T1> first, IAsyncEnumerable<T2> second, T1 firstFill = default!, T2 secondFill = default!)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        return Impl(first, second, firstFill, secondFill);

        static async IAsyncEnumerable<(T1, T2)> Impl(IAsyncEnumerable<T1> first, IAsyncEnumerable<T2> second, T1 firstFill, T2 secondFill, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            // The sources still open, in the order they were opened: a slot is null once its source has ended.
            var open = new IAsyncDisposable?[2];
            try
            {
                IAsyncEnumerator<T1> e1 = first.GetAsyncEnumerator(cancellationToken);
                open[0] = e1;
                IAsyncEnumerator<T2> e2 = second.GetAsyncEnumerator(cancellationToken);
                open[1] = e2;
                while (true)
                {
                    T1 item1 = open[0] is null ? firstFill : await NextOrFillAsync(e1, open, 0, firstFill);
                    T2 item2 = open[1] is null ? secondFill : await NextOrFillAsync(e2, open, 1, secondFill);
                    if (open[0] is null && open[1] is null)
                    {
                        yield break;
                    }

                    yield return (item1, item2);
                }
            }
            finally
            {
                await DisposeAllAsync(open);
            }
        }
    }

    /// <summary>The next item of <paramref name="source"/>, open in <paramref name="open"/> at <paramref name="slot"/>;
    /// at its end, <paramref name="fill"/>, with the source disposed and its slot cleared (see <see cref="DisposeEndedAsync"/>).</summary>
    private static async ValueTask<T> NextOrFillAsync<T>(IAsyncEnumerator<T> source, IAsyncDisposable?[] open, int slot, T fill)
    {
        if (await source.MoveNextAsync())
        {
            return source.Current;
        }

        open[slot] = null;
        await DisposeEndedAsync(source, open);
        return fill;
    }

    /// <summary>
    /// Disposes a source at its end. When that fails, the sources still open are disposed too, and the ended source's
    /// failure is thrown: it came first (a later one of theirs is dropped, as <see cref="DisposeAllAsync"/> drops all but
    /// the first).
    /// </summary>
    private static async ValueTask DisposeEndedAsync(IAsyncDisposable ended, IAsyncDisposable?[] open)
    {
        try
        {
            await ended.DisposeAsync();
        }
        catch (Exception e)
        {
            ExceptionDispatchInfo failure = ExceptionDispatchInfo.Capture(e);
            try
            {
                await DisposeAllAsync(open);
            }
#pragma warning disable CA1031 // A later failure: the first one surfaces.
            catch (Exception)
#pragma warning restore CA1031
            {
            }

            failure.Throw();
        }
    }

    /// <summary>
    /// Combines the items at each position of every source into an array until all sources have ended, filling in
    /// with <paramref name="fill"/> for those that ended first (Python's
    /// <c>itertools.zip_longest(*sources, fillvalue=fill)</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="fill">Stands in for the items of sources that have ended.</param>
    /// <param name="sources">The sequences to combine. The array is copied at the call.</param>
    /// <returns>
    /// One new array of length <c>sources.Length</c> per position, as many as the longest source has items; nothing
    /// when there are no sources.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="sources"/> is or contains <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. Each step advances the live sources in order; a source that has ended is disposed at once
    /// and not read again. All are enumerated with the enumeration token; those still open are disposed when the
    /// enumeration ends, stops early, or fails.
    /// </remarks>
    public static IAsyncEnumerable<T[]> ZipLongest<T>(T fill, params IAsyncEnumerable<T>[] sources)
    {
        ArgumentNullException.ThrowIfNull(sources);
        return Impl(fill, Arguments.CopyNonNull(sources, nameof(sources)));

        static async IAsyncEnumerable<T[]> Impl(T fill, IAsyncEnumerable<T>[] sources, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            if (sources.Length == 0)
            {
                yield break;
            }

            var enumerators = new IAsyncEnumerator<T>?[sources.Length];
            try
            {
                for (int i = 0; i < sources.Length; i++)
                {
                    enumerators[i] = sources[i].GetAsyncEnumerator(cancellationToken);
                }

                // A source's enumerator is null once it has ended (and was disposed).
                int live = sources.Length;
                while (true)
                {
                    var row = new T[sources.Length];
                    for (int i = 0; i < row.Length; i++)
                    {
                        row[i] = fill;
                        if (enumerators[i] is { } enumerator)
                        {
                            if (await enumerator.MoveNextAsync())
                            {
                                row[i] = enumerator.Current;
                            }
                            else
                            {
                                enumerators[i] = null;
                                live--;
                                await DisposeEndedAsync(enumerator, enumerators);
                            }
                        }
                    }

                    if (live == 0)
                    {
                        yield break;
                    }

                    yield return row;
                }
            }
            finally
            {
                await DisposeAllAsync(enumerators);
            }
        }
    }

    /// <summary>
    /// Disposes every non-null enumerator, last opened first, even when one of them throws; then rethrows the first
    /// failure, if any.
    /// </summary>
    private static async ValueTask DisposeAllAsync(IAsyncDisposable?[] enumerators)
    {
        Exception? failure = null;
        for (int i = enumerators.Length - 1; i >= 0; i--)
        {
            if (enumerators[i] is { } enumerator)
            {
                enumerators[i] = null; // null is stored in any array, also one seen through covariance
                try
                {
                    await enumerator.DisposeAsync();
                }
#pragma warning disable CA1031 // The first failure is rethrown after every enumerator had its chance to dispose.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    failure ??= ex;
                }
            }
        }

        if (failure is not null)
        {
            ExceptionDispatchInfo.Capture(failure).Throw();
        }
    }
}
