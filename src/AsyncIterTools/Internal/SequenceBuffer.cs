namespace AsyncIterTools.Internal;

/// <summary>Reads a whole async sequence into memory, for operators that must revisit their input.</summary>
internal static class SequenceBuffer
{
    /// <summary>Enumerates <paramref name="source"/> to its end with <paramref name="cancellationToken"/> and returns its items in order.</summary>
    public static async ValueTask<List<T>> ToListAsync<T>(IAsyncEnumerable<T> source, CancellationToken cancellationToken)
    {
        var items = new List<T>();
        await foreach (T item in source.WithCancellation(cancellationToken))
        {
            items.Add(item);
        }

        return items;
    }
}
