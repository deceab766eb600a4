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
    /// finishes is disposed right away. Waiting allocates nothing per item (the netstandard2.0 build: one thread-pool
    /// work item per wait).
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
        return MergeImpl(Arguments.CopyNonNull(sources, nameof(sources)), Math.Max(1, sources.Length));
    }

    /// <summary>
    /// Merges <paramref name="sources"/> into one sequence of their items in arrival order, with at most
    /// <paramref name="maxConcurrency"/> sources active at once.
    /// </summary>
    /// <typeparam name="T">The type of the elements.</typeparam>
    /// <param name="sources">
    /// The sequences to merge; enumerated lazily: the next source starts when an active one finishes.
    /// A <see langword="null"/> element fails the merge, when it is reached, with an <see cref="ArgumentNullException"/>.
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

    /// <remarks>
    /// Each active source is one call at a time in a <see cref="CompletionQueue{TArg, TResult}"/>: its
    /// <c>MoveNextAsync</c>. The consumer takes sources whose call completed in completion order, and starts a source's
    /// next call only after it has yielded that source's item, so a source that completes synchronously goes to the back
    /// of the line: round-robin among ready sources.
    /// </remarks>
    private static async IAsyncEnumerable<T> MergeImpl<T>(
        IEnumerable<IAsyncEnumerable<T>> sources,
        int maxConcurrency,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var moves = new CompletionQueue<IAsyncEnumerator<T>, bool>(nameof(Merge), static (source, _) => source.MoveNextAsync(), cancellationToken);

        // Sources started and not yet disposed.
        var active = new List<IAsyncEnumerator<T>>();
        var opening = new SourceOpener<T>(sources, active, moves.Token);
        bool atYield = false; // when the finally finds it true, the consumer left early
        try
        {
            moves.StartMore(opening, maxConcurrency, nameof(sources));
            while (moves.InFlight > 0 && moves.Failure is null)
            {
                CompletionQueue<IAsyncEnumerator<T>, bool>.Operation move = await moves.NextAsync();
                IAsyncEnumerator<T> source = move.Arg;
                if (!TryTakeMergeItem(moves, move, cancellationToken, out bool finished, out T item))
                {
                    if (finished && await TryRetireAsync(moves, active, source))
                    {
                        moves.StartMore(opening, maxConcurrency, nameof(sources));
                    }

                    continue;
                }

                atYield = true;
                yield return item;
                atYield = false;
                cancellationToken.ThrowIfCancellationRequested(); // no source is asked for more once cancelled

                // Asked for its next item only now, after the consumer is done with this one; not while another
                // source's failure waits to be taken (it ends the merge next).
                if (!moves.HasUntakenFailure)
                {
                    _ = moves.Start(source);
                }
            }
        }
        finally
        {
            await ShutDownMergeAsync(moves, active, opening, cancellationToken, atYield);
        }
    }

    /// <summary>
    /// Opens each source, in order, as the merge reaches it, with the merge's token, and tracks it in the merge's active
    /// sources. The sequence of sources is disposed at its end, as a <c>foreach</c> would (a failure of that disposal is
    /// the sequence's, and stops the merge), or else when the merge shuts down. Not an iterator: a <see langword="null"/>
    /// source or one that fails to open leaves the sequence undisposed until then (an iterator's <c>foreach</c> would
    /// dispose it at once, and a failure of that disposal would replace the first; at shutdown the first failure wins).
    /// </summary>
    private sealed class SourceOpener<T>(IEnumerable<IAsyncEnumerable<T>> sources, List<IAsyncEnumerator<T>> active, CancellationToken token)
        : IEnumerator<IAsyncEnumerator<T>>
    {
        private IEnumerator<IAsyncEnumerable<T>>? _sources;

        private bool _disposed;

        /// <summary>Gets the failure of the sequence's disposal, if it failed: the shutdown records it before disposing the
        /// active sources, so that it is not lost, nor overtaken, when the consumer left before taking it.</summary>
        public ExceptionDispatchInfo? DisposalFailure { get; private set; }

        public IAsyncEnumerator<T> Current { get; private set; } = null!;

        object System.Collections.IEnumerator.Current => Current;

        public bool MoveNext()
        {
            _sources ??= sources.GetEnumerator();
            if (!_sources.MoveNext())
            {
                Dispose();
                return false;
            }

            Current = Arguments.NotNullElement(_sources.Current, nameof(sources)).GetAsyncEnumerator(token);
            active.Add(Current);
            return true;
        }

        public void Reset() => throw new NotSupportedException();

        public void Dispose()
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            try
            {
                _sources?.Dispose();
            }
            catch (Exception ex)
            {
                DisposalFailure = ExceptionDispatchInfo.Capture(ex);
                throw;
            }
        }
    }

    /// <summary>
    /// Consumes a source's completed <c>MoveNextAsync</c> and gives the operation back: true with an item; false when the
    /// source finished, or failed (recorded, which cancels the others).
    /// </summary>
    private static bool TryTakeMergeItem<T>(
        CompletionQueue<IAsyncEnumerator<T>, bool> moves,
        CompletionQueue<IAsyncEnumerator<T>, bool>.Operation move,
        CancellationToken cancellationToken,
        out bool finished,
        out T item)
    {
        item = default!;
        finished = false;
        try
        {
            if (!move.GetResult())
            {
                finished = true;
                return false;
            }

            item = move.Arg.Current; // user code, which may cancel the token: checked after it
            cancellationToken.ThrowIfCancellationRequested();
            return true;
        }
        catch (Exception ex)
        {
            moves.Fail(moves.SourceFailure(ex));
            return false;
        }
        finally
        {
            moves.Return(move);
        }
    }

    /// <summary>Disposes a finished source; false if that failed (recorded).</summary>
    private static async ValueTask<bool> TryRetireAsync<T>(CompletionQueue<IAsyncEnumerator<T>, bool> moves, List<IAsyncEnumerator<T>> active, IAsyncEnumerator<T> source)
    {
        _ = active.Remove(source);
        try
        {
            await source.DisposeAsync();
            return true;
        }
        catch (Exception ex)
        {
            moves.Fail(moves.SourceFailure(ex));
            return false;
        }
    }

    /// <summary>
    /// Cancels the sources, waits for every outstanding <c>MoveNextAsync</c> (dropping its outcome), then disposes each
    /// active source once and the sequence of sources, and throws the first failure. A disposal failure is that failure if
    /// nothing failed before. Once the caller has cancelled, an enumeration ending through the consumer's move ends as the
    /// cancellation, whatever failed; a consumer that cancelled and then left at a yield gets no disposal failure (one
    /// that left first gets it, also when the token is cancelled while the sources are disposed).
    /// </summary>
    private static async ValueTask ShutDownMergeAsync<T>(
        CompletionQueue<IAsyncEnumerator<T>, bool> moves,
        List<IAsyncEnumerator<T>> active,
        SourceOpener<T> opening,
        CancellationToken cancellationToken,
        bool leftAtYield)
    {
        bool leftAfterCancelling = leftAtYield && cancellationToken.IsCancellationRequested; // read as the consumer leaves
        moves.Cancel();
        await moves.DrainAsync();
        if (opening.DisposalFailure is { } atItsEnd)
        {
            // The sequence of sources failed to dispose at its end, before the consumer took that failure (it left): it
            // came before whatever the active sources' disposal does now.
            RecordDisposalFailure(atItsEnd.SourceException);
        }
        foreach (IAsyncEnumerator<T> source in active)
        {
            try
            {
                await source.DisposeAsync();
            }
            catch (Exception ex)
            {
                // A clean-up that gave way to the token this operator gave the source is not a failure.
                if (!ex.IsGivingWayTo(moves.Token))
                {
                    RecordDisposalFailure(ex);
                }
            }
        }

        active.Clear();
        try
        {
            opening.Dispose();
        }
        catch (Exception ex)
        {
            RecordDisposalFailure(ex);
        }

        moves.Dispose();
        if (!leftAtYield)
        {
            // The token rule of the lazy operators: the end of the merge, or a failure taken before the cancellation that
            // waited here for the sources' moves, is the cancellation (which also stops the start of further sources, so
            // it must not pass for the end).
            cancellationToken.ThrowIfCancellationRequested();
        }

        moves.Failure?.Throw();

        void RecordDisposalFailure(Exception ex)
        {
            // Dropped once the consumer cancelled and then left.
            if (!leftAfterCancelling)
            {
                moves.Fail(ex);
            }
        }
    }
}
