namespace AsyncPrimitives;

/// <content>The <see cref="IAsyncEnumerator{T}"/> behind <c>await foreach</c>.</content>
public abstract partial class AsyncQueueBase<T>
{
    /// <summary>
    /// Takes items until the queue is shut down and empty. An item available now is taken synchronously without
    /// allocating; otherwise the enumerator waits as an ordinary getter (FIFO with every other getter).
    /// </summary>
    private sealed class Enumerator(AsyncQueueBase<T> queue, CancellationToken cancellationToken) : IAsyncEnumerator<T>
    {
        private T _current = default!;

        public T Current => _current;

        public ValueTask<bool> MoveNextAsync()
        {
            if (cancellationToken.IsCancellationRequested)
            {
                return ValueTask.FromCanceled<bool>(cancellationToken);
            }

            if (queue._getters.TryNow(new GetPolicy(queue), default!, out T item, out Exception? refusal))
            {
                _current = item;
                return new ValueTask<bool>(true);
            }

            _current = default!;
            return refusal is null ? WaitAsync() : new ValueTask<bool>(false); // refused: shut down and empty
        }

        public ValueTask DisposeAsync()
        {
            _current = default!;
            return default;
        }

        private async ValueTask<bool> WaitAsync()
        {
            try
            {
                _current = await queue.GetAsync(cancellationToken).ConfigureAwait(false);
                return true;
            }
            catch (QueueShutDownException)
            {
                // Shut down while we waited on an empty queue: the sequence ends.
                _current = default!;
                return false;
            }
        }
    }
}
