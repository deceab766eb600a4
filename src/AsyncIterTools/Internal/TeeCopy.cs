namespace AsyncIterTools.Internal;

/// <summary>One copy returned by Tee; enumerable once.</summary>
internal sealed class TeeCopy<T>(TeeBuffer<T> buffer, int index) : IAsyncEnumerable<T>
{
    /// <summary>0 until the first GetAsyncEnumerator, then 1.</summary>
    private int _enumerated;

    public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _enumerated, 1) != 0)
        {
            throw new InvalidOperationException("Each copy returned by Tee can be enumerated only once.");
        }

        return new Enumerator(buffer, index, cancellationToken);
    }

    private sealed class Enumerator(TeeBuffer<T> buffer, int index, CancellationToken cancellationToken) : IAsyncEnumerator<T>
    {
        /// <summary>The last node this copy consumed (the start sentinel at first); null after the end or disposal.</summary>
        private TeeBuffer<T>.Node? _node = buffer.Start;

        /// <summary>0 until DisposeAsync, then 1.</summary>
        private int _disposed;

        public T Current { get; private set; } = default!;

        public async ValueTask<bool> MoveNextAsync()
        {
            if (_node is null)
            {
                return false;
            }

            TeeBuffer<T>.Node? next = await buffer.NextAsync(index, _node, cancellationToken);
            if (next is null)
            {
                _node = null;
                Current = default!;
                return false;
            }

            _node = next;
            Current = next.Value;
            return true;
        }

        public ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return default;
            }

            _node = null;
            return buffer.DetachAsync(index);
        }
    }
}
