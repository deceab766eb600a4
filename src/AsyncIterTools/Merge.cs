using System.Runtime.CompilerServices;
using AsyncIterTools.Internal;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Merges <paramref name="sources"/> into one sequence of their items in arrival order, pulling all sources
    /// concurrently and fairly (aioitertools' <c>as_generated</c>).
    /// </summary>
    /// <typeparam name="T">The type of the elements.</typeparam>
    /// <param name="sources">The sequences to merge; all are started on the first <c>MoveNextAsync</c>.</param>
    /// <returns>A sequence of every item of every source, in the order they become available.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="sources"/> or one of its elements is <see langword="null"/>.</exception>
    /// <remarks>
    /// <para>
    /// Deferred. Each source has at most one <c>MoveNextAsync</c> outstanding; a source is asked for its next item only
    /// after its previous item was handed to the consumer. Sources whose items are ready are served first come, first
    /// served, and a source that completes synchronously goes to the back of the line after each item, so a fast
    /// synchronous source cannot starve the others (round-robin among ready sources).
    /// </para>
    /// <para>
    /// Every source gets a token linked to the one from <c>WithCancellation</c>. The first error (of a source or of its
    /// disposal) cancels the other sources, waits for their outstanding <c>MoveNextAsync</c>, disposes them, and then
    /// surfaces. Disposing the merged enumerator early does the same. Each source is disposed exactly once; one that
    /// finishes is disposed right away. Waiting allocates nothing per item.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// await foreach (Event e in AsyncIter.Merge(clicks, keys, timerTicks))
    /// {
    ///     Handle(e);
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<T> Merge<T>(params IAsyncEnumerable<T>[] sources)
    {
        ArgumentNullException.ThrowIfNull(sources);
        foreach (IAsyncEnumerable<T> source in sources)
        {
            if (source is null)
            {
                throw new ArgumentNullException(nameof(sources), "The sources contain a null element.");
            }
        }

        // Copied, so that later changes to the caller's array do not change what is merged.
        return MergeImpl((IAsyncEnumerable<T>[])sources.Clone(), Math.Max(1, sources.Length));
    }

    /// <summary>
    /// Merges <paramref name="sources"/> into one sequence of their items in arrival order, with at most
    /// <paramref name="maxConcurrency"/> sources active at once.
    /// </summary>
    /// <typeparam name="T">The type of the elements.</typeparam>
    /// <param name="sources">
    /// The sequences to merge; enumerated lazily: the next source starts when an active one finishes.
    /// A <see langword="null"/> element fails the merge with an <see cref="ArgumentException"/>.
    /// </param>
    /// <param name="maxConcurrency">The most sources being pulled at once.</param>
    /// <returns>A sequence of every item of every source, in the order they become available.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="sources"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrency"/> is zero or negative.</exception>
    /// <remarks>
    /// Same semantics as <see cref="Merge{T}(IAsyncEnumerable{T}[])"/>: fair, first error cancels and disposes the others
    /// and then surfaces, each source disposed exactly once. Sources start in input order.
    /// </remarks>
    /// <example>
    /// <code>
    /// IEnumerable&lt;IAsyncEnumerable&lt;Row&gt;&gt; shards = shardIds.Select(id => db.ReadShard(id));
    /// await foreach (Row row in AsyncIter.Merge(shards, maxConcurrency: 4))
    /// {
    ///     Process(row);
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<T> Merge<T>(IEnumerable<IAsyncEnumerable<T>> sources, int maxConcurrency)
    {
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxConcurrency);
        return MergeImpl(sources, maxConcurrency);
    }

    private static async IAsyncEnumerable<T> MergeImpl<T>(
        IEnumerable<IAsyncEnumerable<T>> sources,
        int maxConcurrency,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var hub = new MergeHub<T>(sources, maxConcurrency, cancellationToken);
        try
        {
            hub.StartMore();
            while (!hub.HasFailed)
            {
                MergeHub<T>.Lane? lane = await hub.NextAsync();
                if (lane is null)
                {
                    break;
                }

                if (!TryTakeMergeItem(hub, lane, cancellationToken, out bool finished, out T item))
                {
                    if (finished)
                    {
                        await hub.RetireAsync(lane);
                    }

                    continue;
                }

                yield return item;

                // Asked for its next item only now, after the consumer is done with this one.
                hub.Pump(lane);
            }
        }
        finally
        {
            await hub.ShutdownAsync();
            hub.ThrowIfFailed();
        }
    }

    /// <summary>Consumes a lane's completed MoveNextAsync: true with an item; false when it finished or failed (recorded).</summary>
    private static bool TryTakeMergeItem<T>(MergeHub<T> hub, MergeHub<T>.Lane lane, CancellationToken cancellationToken, out bool finished, out T item)
    {
        item = default!;
        finished = false;
        try
        {
            if (!lane.GetResult())
            {
                finished = true;
                return false;
            }

            cancellationToken.ThrowIfCancellationRequested();
        }
        catch (Exception ex)
        {
            hub.Fail(ex);
            return false;
        }

        item = lane.Enumerator.Current;
        return true;
    }
}
