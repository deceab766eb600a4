namespace AsyncIterTools.Internal;

/// <summary>
/// Collects results by input index (they arrive in completion order) into one array, sized up front when the number of
/// inputs is known, so that gathering copies nothing at the end.
/// </summary>
/// <remarks>Single writer: used only by the gathering method's own flow.</remarks>
internal sealed class ResultBuffer<T>
{
    /// <summary>Slots <c>0 .. _count - 1</c> hold results (or defaults for indices not reported yet).</summary>
    private T[] _items;

    /// <summary>One past the highest index set.</summary>
    private int _count;

    public ResultBuffer(int capacityHint) => _items = capacityHint > 0 ? new T[capacityHint] : [];

    /// <summary>Gets the number of inputs when <paramref name="source"/> knows it without being enumerated, else 0.</summary>
    public static int CountHint<TInput>(IEnumerable<TInput> source) => source switch
    {
        ICollection<TInput> collection => collection.Count,
        IReadOnlyCollection<TInput> collection => collection.Count,
        _ => 0,
    };

    public void Set(int index, T value)
    {
        if (index >= _items.Length)
        {
            Array.Resize(ref _items, Math.Max(index + 1, Math.Max(4, 2 * _items.Length)));
        }

        _items[index] = value;
        if (index >= _count)
        {
            _count = index + 1;
        }
    }

    /// <summary>Returns the results; the buffer's own array when it is exactly full (the usual case with a count hint).</summary>
    public T[] ToArray()
    {
        if (_count != _items.Length)
        {
            Array.Resize(ref _items, _count);
        }

        return _items;
    }
}
