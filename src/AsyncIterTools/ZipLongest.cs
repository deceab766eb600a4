using System.Runtime.CompilerServices;
using AsyncIterTools.Internal;

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
    /// that has ended is not read again. Both are enumerated with the enumeration token and both are disposed when the
    /// enumeration ends, stops early, or fails.
    /// </remarks>
    public static IAsyncEnumerable<(T1, T2)> ZipLongest<T1, T2>(IAsyncEnumerable<T1> first, IAsyncEnumerable<T2> second, T1 firstFill = default!, T2 secondFill = default!)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        return Impl(first, second, firstFill, secondFill);

        static async IAsyncEnumerable<(T1, T2)> Impl(IAsyncEnumerable<T1> first, IAsyncEnumerable<T2> second, T1 firstFill, T2 secondFill, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await using IAsyncEnumerator<T1> e1 = first.GetAsyncEnumerator(cancellationToken);
            await using IAsyncEnumerator<T2> e2 = second.GetAsyncEnumerator(cancellationToken);
            bool has1 = true;
            bool has2 = true;
            while (true)
            {
                has1 = has1 && await e1.MoveNextAsync();
                has2 = has2 && await e2.MoveNextAsync();
                if (!has1 && !has2)
                {
                    yield break;
                }

                yield return (has1 ? e1.Current : firstFill, has2 ? e2.Current : secondFill);
            }
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
    /// Execution is deferred. Each step advances the live sources in order; a source that has ended is not read again.
    /// All are enumerated with the enumeration token and all are disposed when the enumeration ends, stops early, or
    /// fails.
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

                int live = sources.Length;
                var ended = new bool[sources.Length];
                while (true)
                {
                    var row = new T[sources.Length];
                    for (int i = 0; i < row.Length; i++)
                    {
                        if (!ended[i] && await enumerators[i]!.MoveNextAsync())
                        {
                            row[i] = enumerators[i]!.Current;
                        }
                        else
                        {
                            if (!ended[i])
                            {
                                ended[i] = true;
                                live--;
                            }

                            row[i] = fill;
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
    private static async ValueTask DisposeAllAsync<T>(IAsyncEnumerator<T>?[] enumerators)
    {
        Exception? failure = null;
        for (int i = enumerators.Length - 1; i >= 0; i--)
        {
            if (enumerators[i] is { } enumerator)
            {
                enumerators[i] = null;
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
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        }
    }
}
