namespace AsyncTools.Benchmarks;

/// <summary>
/// A hand-written, synchronously completing <see cref="IAsyncEnumerable{T}"/> over <c>start .. start + count - 1</c>:
/// every <c>MoveNextAsync</c> completes at once without allocating, so an operator's own cost dominates.
/// </summary>
public sealed class SyncRange(int start, int count) : IAsyncEnumerable<int>
{
    public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) => new Enumerator(start, start + count);

    private sealed class Enumerator(int next, int end) : IAsyncEnumerator<int>
    {
        public int Current { get; private set; }

        public ValueTask<bool> MoveNextAsync()
        {
            if (next < end)
            {
                Current = next++;
                return new ValueTask<bool>(true);
            }

            return new ValueTask<bool>(false);
        }

        public ValueTask DisposeAsync() => default;
    }
}

/// <summary>An async sequence that yields the thread (<see cref="Task.Yield"/>) before every item: a source that is really asynchronous.</summary>
public static class YieldingRange
{
    public static async IAsyncEnumerable<int> Create(int start, int count)
    {
        for (int i = start; i < start + count; i++)
        {
            await Task.Yield();
            yield return i;
        }
    }
}
