namespace AsyncIterTools.Internal;

/// <summary>One copy returned by Tee; enumerable once.</summary>
internal sealed class TeeCopy<T>(TeeBuffer<T> buffer, int index, TeeBuffer<T>.Node start) : IAsyncEnumerable<T>
{
    /// <summary>0 until the first GetAsyncEnumerator, then 1.</summary>
    private int _enumerated;

    /// <summary>The sentinel this copy starts from; handed to the enumerator and then dropped.</summary>
    private TeeBuffer<T>.Node? _start = start;

    public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _enumerated, 1) != 0)
        {
            throw new InvalidOperationException("Each copy returned by Tee can be enumerated only once.");
        }

        TeeBuffer<T>.Node node = _start!;
        _start = null;
        return new Enumerator(buffer, index, node, cancellationToken);
    }

    private sealed class Enumerator(TeeBuffer<T> buffer, int index, TeeBuffer<T>.Node start, CancellationToken cancellationToken) : IAsyncEnumerator<T>
    {
        /// <summary>The last node this copy consumed (the start sentinel at first); null after the end or disposal.</summary>
        private TeeBuffer<T>.Node? _node = start;

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
