using System.Threading.Channels;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>Above this size a batch buffer starts small and grows, so a huge size does not allocate up front.</summary>
    private const int MaxPreallocatedBatch = 1024;

    /// <summary>
    /// Splits <paramref name="source"/> into arrays of <paramref name="size"/> items; the last may be shorter
    /// (Python's <c>itertools.batched</c>).
    /// </summary>
    /// <typeparam name="T">The type of the elements.</typeparam>
    /// <param name="source">The sequence to split.</param>
    /// <param name="size">The number of items per batch.</param>
    /// <param name="strict">
    /// If <see langword="true"/>, a short last batch is an error: the full batches are yielded, then an
    /// <see cref="InvalidOperationException"/> is thrown instead of the short one (Python 3.13's <c>strict=True</c>).
    /// </param>
    /// <returns>A sequence of arrays; each new (never reused), none empty.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or negative.</exception>
    /// <remarks>
    /// Deferred and sequential: the source is read only as batches are requested, with the enumerator's token, and
    /// disposed once. With <paramref name="strict"/> the <see cref="InvalidOperationException"/> is thrown from
    /// <c>MoveNextAsync</c> when the short batch would have been yielded.
    /// </remarks>
    /// <example>
    /// <code>
    /// IAsyncEnumerable&lt;int&gt; numbers = AsyncEnumerable.Range(0, 7);
    /// await foreach (int[] batch in numbers.Batch(3))
    /// {
    ///     Console.WriteLine(string.Join(",", batch)); // 0,1,2  3,4,5  6
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<T[]> Batch<T>(this IAsyncEnumerable<T> source, int size, bool strict = false)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        return Impl(source, size, strict);

        static async IAsyncEnumerable<T[]> Impl(IAsyncEnumerable<T> source, int size, bool strict, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await using IAsyncEnumerator<T> enumerator = source.GetAsyncEnumerator(cancellationToken);
            while (await enumerator.MoveNextAsync())
            {
                T[] batch = new T[size <= MaxPreallocatedBatch ? size : MaxPreallocatedBatch];
                batch[0] = enumerator.Current;
                int count = 1;
                while (count < size)
                {
                    // A synchronously completed MoveNextAsync (the common case) skips the await machinery.
                    ValueTask<bool> next = enumerator.MoveNextAsync();
                    if (!(next.IsCompletedSuccessfully ? next.Result : await next))
                    {
                        break;
                    }

                    if (count == batch.Length)
                    {
                        Array.Resize(ref batch, (int)Math.Min(2L * batch.Length, size));
                    }

                    batch[count++] = enumerator.Current;
                }

                if (count < size)
                {
                    if (strict)
                    {
                        throw new InvalidOperationException($"The last batch has {count} items; {size} were expected (strict).");
                    }

                    Array.Resize(ref batch, count);
                    yield return batch;
                    yield break;
                }

                yield return batch;
            }
        }
    }

    /// <summary>
    /// Groups <paramref name="source"/> into batches emitted when <paramref name="maxSize"/> items are collected or when
    /// <paramref name="maxDelay"/> has passed since the batch's first item was read, whichever comes first.
    /// </summary>
    /// <typeparam name="T">The type of the elements.</typeparam>
    /// <param name="source">The sequence to group.</param>
    /// <param name="maxSize">The most items per batch.</param>
    /// <param name="maxDelay">
    /// The longest a read item waits before its batch is emitted; <see cref="Timeout.InfiniteTimeSpan"/> for size-only batching
    /// (with the source still read ahead).
    /// </param>
    /// <param name="timeProvider">The clock; <see langword="null"/> for <see cref="TimeProvider.System"/>.</param>
    /// <returns>A sequence of non-empty arrays of at most <paramref name="maxSize"/> items, in source order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="maxSize"/> is zero or negative, or <paramref name="maxDelay"/> is zero or negative and not infinite, or longer
    /// than about 49.7 days (4294967294 ms, the limit of .NET timers).
    /// </exception>
    /// <remarks>
    /// <para>
    /// Deferred. The source is read ahead on its own task (up to <paramref name="maxSize"/> items beyond the batch being
    /// built), so a stalled source cannot hold a partial batch past its deadline; the deadline is measured from the time
    /// the batch's first item was read from the source, on <paramref name="timeProvider"/>, and kept by its timers to their
    /// precision (the system's count whole milliseconds, as <see cref="Task.Delay(TimeSpan)"/> does). No batch is ever
    /// empty: nothing is emitted while no item is waiting.
    /// </para>
    /// <para>
    /// A source error ends the batch being built: that partial batch (the items read before the error) is emitted first,
    /// and the error is thrown by the following <c>MoveNextAsync</c>. Cancelling the token from <c>WithCancellation</c>
    /// throws <see cref="OperationCanceledException"/> (a partial batch is dropped) once the read-ahead has stopped and
    /// disposed the source: at once when the source honours its token, and when its pending read returns if it ignores
    /// it. Disposing the enumerator stops the read-ahead, awaits it, and so disposes the source exactly once.
    /// </para>
    /// </remarks>
    /// <example>
    /// <code>
    /// await foreach (LogLine[] batch in lines.Batch(maxSize: 500, maxDelay: TimeSpan.FromSeconds(2)))
    /// {
    ///     await sink.WriteAsync(batch); // at most 500 lines, none older than ~2 s
    /// }
    /// </code>
    /// </example>
    public static IAsyncEnumerable<T[]> Batch<T>(this IAsyncEnumerable<T> source, int maxSize, TimeSpan maxDelay, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxSize);
        TimeoutArgument.ThrowIfInvalid(maxDelay, allowZero: false);

        return TimedBatchImpl(source, maxSize, maxDelay, timeProvider ?? TimeProvider.System);
    }

    private static async IAsyncEnumerable<T[]> TimedBatchImpl<T>(
        IAsyncEnumerable<T> source,
        int maxSize,
        TimeSpan maxDelay,
        TimeProvider timeProvider,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var pump = new SourcePump<T>(maxSize, timeProvider, cancellationToken);
        pump.Start(source);
        ChannelReader<SourcePump<T>.Entry> reader = pump.Reader;
        bool ended = false;
        while (!ended && await reader.WaitToReadAsync(cancellationToken))
        {
            if (!reader.TryRead(out SourcePump<T>.Entry first))
            {
                continue;
            }

            var batch = new List<T>(Math.Min(maxSize, 16)) { first.Item };

            // One deadline per batch, armed once when its first item arrives (not per wait), so the timer is never
            // re-armed relative to a clock that has moved on.
            using (var deadline = new Deadline(maxDelay, timeProvider, first.Timestamp, cancellationToken))
            {
                while (batch.Count < maxSize)
                {
                    if (reader.TryPeek(out SourcePump<T>.Entry next))
                    {
                        // An item read once this batch was due (at its deadline or after, as the deadline counts it)
                        // starts the next one, however late the consumer comes to take this one: which batch an item
                        // joins depends on when it was read, never on when we look.
                        if (maxDelay != Timeout.InfiniteTimeSpan && timeProvider.GetElapsedTime(first.Timestamp, next.Timestamp) >= maxDelay)
                        {
                            break;
                        }

                        reader.TryRead(out next);
                        batch.Add(next.Item);
                        continue;
                    }

                    if (deadline.IsExpired)
                    {
                        break;
                    }

                    try
                    {
                        if (!await reader.WaitToReadAsync(deadline.Token))
                        {
                            ended = true;
                            break;
                        }
                    }
                    catch (OperationCanceledException)
                    {
                        // Cancelled: thrown as the caller's token (the wait watched the deadline's, linked to it). Else
                        // the deadline passed while waiting: take what the read-ahead read before it, then emit.
                        cancellationToken.ThrowIfCancellationRequested();
                    }
                }
            }

            cancellationToken.ThrowIfCancellationRequested(); // also when the batch was full or the source ended meanwhile
            yield return batch.ToArray();
        }

        pump.ThrowIfFailed(); // the cancellation, once cancelled: an end or a failure of the source after it is not reported
    }
}
