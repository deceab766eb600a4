using System.Runtime.CompilerServices;

namespace AsyncPrimitives.Postgres;

/// <content>The queue as a stream: a read loop that completes each delivery as it asks for the next, and the deliveries
/// one after another for the operators.</content>
public sealed partial class PostgresQueue<T>
{
    /// <summary>
    /// Reads the queue in a loop, completing each delivery in the same round trip that takes the next item: per item,
    /// one call to get and complete instead of two. The loop ends when the queue is shut down and nothing is left to
    /// deliver.
    /// </summary>
    /// <param name="cancellationToken">Cancels the wait for the next item (also given through
    /// <see cref="TaskAsyncEnumerableExtensions.WithCancellation{T}(IAsyncEnumerable{T}, CancellationToken)"/>).</param>
    /// <returns>The deliveries, one at a time, in the queue's order.</returns>
    /// <remarks>
    /// <para>A delivery is completed when the loop asks for the next one (its body is done with it), unless the body
    /// completed or abandoned it itself; also when <paramref name="cancellationToken"/> is cancelled by then. Leaving the
    /// body early (<c>break</c>, an exception) abandons the delivery it had, unless the body completed it: its item goes
    /// back in line at once, and is delivered again (at-least-once). Complete the delivery before a <c>break</c> when its
    /// work is done.</para>
    /// <para>When a delivery's lease was lost before the loop could complete it (and the body did not abandon or dispose
    /// it), asking for the next one throws <see cref="PostgresLeaseLostException"/> and takes nothing: the item may be with
    /// another consumer.</para>
    /// <para>So the body must be done with a delivery before the loop asks for the next: an operator that reads ahead or
    /// runs several bodies at once (AsyncIterTools' <c>Map</c>, <c>MapUnordered</c>, <c>Prefetch</c>, <c>Batch</c>,
    /// <c>Merge</c>) would have deliveries completed before they were processed. Under such operators, read with
    /// <see cref="GetAllAsync"/>, which completes nothing itself.</para>
    /// </remarks>
    /// <exception cref="PostgresLeaseLostException">The lease of the delivery to complete was lost.</exception>
    /// <exception cref="InvalidOperationException">The body's own completion or abandonment of the delivery was still in
    /// progress (not awaited) when the loop asked for the next item.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the next
    /// item was taken; the delivery before it was completed.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, the coordinator's connection
    /// failed during the wait, or a delivered item could not be read as <typeparamref name="T"/> (it was given back).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public async IAsyncEnumerable<PostgresDelivery<T>> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        PostgresDelivery<T>? current = null;
        try
        {
            while (true)
            {
                List<PostgresDelivery<T>> got;
                try
                {
                    got = await GetCoreAsync(1, Timeout.InfiniteTimeSpan, throwOnTimeout: true, cancellationToken, current).ConfigureAwait(false);
                }
                catch (QueueShutDownException)
                {
                    yield break;
                }

                current = got[0];
                yield return current;
            }
        }
        finally
        {
            if (current is not null)
            {
                await current.DisposeAsync().ConfigureAwait(false); // abandons it unless it was completed
            }
        }
    }

    /// <summary>
    /// Takes items one after another, as <see cref="GetAsync(CancellationToken)"/> does, and completes none of them: each
    /// delivery is the work's to complete (<see cref="PostgresDelivery{T}.CompleteAsync"/>), give back
    /// (<see cref="PostgresDelivery{T}.AbandonAsync"/>) or dispose. The stream ends when the queue is shut down and
    /// nothing is left to deliver.
    /// </summary>
    /// <param name="cancellationToken">Cancels the wait for the next item (also given through
    /// <see cref="TaskAsyncEnumerableExtensions.WithCancellation{T}(IAsyncEnumerable{T}, CancellationToken)"/>); a
    /// cancelled wait took nothing.</param>
    /// <returns>The deliveries, one at a time, in the queue's order.</returns>
    /// <remarks>
    /// <para>The source for operators that read ahead or run several bodies at once (AsyncIterTools' <c>Map</c>,
    /// <c>MapUnordered</c>, <c>Prefetch</c>, <c>Batch</c>, <c>Merge</c>): a delivery is completed only by the work that
    /// processed it, whenever that ends, so a failing body never has its item completed (unlike
    /// <see cref="ReadAllAsync"/>, which completes a delivery when the loop asks for the next).</para>
    /// <para>A delivery that nothing references any more while it is neither completed nor abandoned (one an operator
    /// read ahead and dropped when the pipeline stopped) is no longer renewed once the garbage collector has found it:
    /// its item is delivered again once its lease expires, its attempt counted.</para>
    /// </remarks>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the next
    /// item was taken.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, the coordinator's connection
    /// failed during the wait, or a delivered item could not be read as <typeparamref name="T"/> (it was given back).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public async IAsyncEnumerable<PostgresDelivery<T>> GetAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (true)
        {
            PostgresDelivery<T> delivery;
            try
            {
                delivery = await GetAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (QueueShutDownException)
            {
                yield break;
            }

            yield return delivery;
        }
    }
}
