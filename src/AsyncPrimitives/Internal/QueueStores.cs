using System.Diagnostics;

namespace AsyncPrimitives.Internal;

/// <summary>
/// The storage of an <see cref="AsyncQueueBase{T}"/>: the only thing that differs between the FIFO, LIFO and
/// priority orderings. Not thread-safe: every member is called under the queue's lock. Capacity grows on demand
/// (the queue enforces its own bound), so a large bound costs nothing until it is used.
/// </summary>
internal abstract class QueueStore<T>
{
    /// <summary>Capacity of a store's first array.</summary>
    protected const int InitialCapacity = 16;

    /// <summary>Number of stored items.</summary>
    public int Count { get; protected set; }

    /// <summary>Stores <paramref name="item"/>.</summary>
    public abstract void Add(T item);

    /// <summary>Removes and returns the next item in this store's order. The store is not empty.</summary>
    public abstract T Take();

    /// <summary>Undoes the last <see cref="Add"/>, which nothing has changed the store since (nor an earlier undo): the
    /// store is as it was before that add. Never calls the comparer, so it cannot throw.</summary>
    public abstract void UndoAdd();

    /// <summary>Removes every item, dropping the references. Returns how many there were.</summary>
    public abstract int Clear();

    /// <summary>The first array's size for a queue bounded at <paramref name="maxSize"/> (0 = unbounded). A get may
    /// move a waiting putter's item in before taking, so a full store briefly holds one item past the bound.</summary>
    protected static int FirstCapacity(int maxSize) =>
        maxSize == 0 ? InitialCapacity : (int)Math.Min((long)maxSize + 1, InitialCapacity);

    /// <summary>The next array size when <paramref name="length"/> is full.</summary>
    protected static int Grow(int length) => length >= int.MaxValue / 2 ? int.MaxValue : length * 2;

    /// <summary>Empties a store whose items live in <paramref name="items"/>, dropping every reference. Returns how many there were.</summary>
    protected int ClearAll<TItem>(TItem[] items)
    {
        int count = Count;
        Array.Clear(items, 0, items.Length);
        Count = 0;
        return count;
    }
}

/// <summary>First in, first out: a growable ring buffer (no version field, no bounds checks beyond the array's).</summary>
internal sealed class FifoStore<T> : QueueStore<T>
{
    /// <summary>Items in positions <c>[_head, _head + Count)</c>, modulo the length.</summary>
    private T[] _items;

    /// <summary>Index of the oldest item.</summary>
    private int _head;

    public FifoStore(int maxSize) => _items = new T[FirstCapacity(maxSize)];

    public override void Add(T item)
    {
        T[] items = _items;
        int count = Count;
        if (count == items.Length)
        {
            items = Resize(items, count);
        }

        int tail = _head + count;
        if (tail >= items.Length)
        {
            tail -= items.Length;
        }

        items[tail] = item;
        Count = count + 1;
    }

    public override T Take()
    {
        Debug.Assert(Count > 0, "take from an empty store");
        T[] items = _items;
        int head = _head;
        T item = items[head];
        items[head] = default!;
        head++;
        _head = head == items.Length ? 0 : head;
        Count--;
        return item;
    }

    public override void UndoAdd()
    {
        int last = Count - 1;
        int tail = _head + last;
        _items[tail >= _items.Length ? tail - _items.Length : tail] = default!;
        Count = last;
    }

    public override int Clear()
    {
        _head = 0;
        return ClearAll(_items);
    }

    private T[] Resize(T[] items, int count)
    {
        var grown = new T[Grow(items.Length)];
        int firstPart = Math.Min(count, items.Length - _head);
        Array.Copy(items, _head, grown, 0, firstPart);
        Array.Copy(items, 0, grown, firstPart, count - firstPart);
        _items = grown;
        _head = 0;
        return grown;
    }
}

/// <summary>Last in, first out: an array stack.</summary>
internal sealed class LifoStore<T> : QueueStore<T>
{
    /// <summary>Items in positions <c>[0, Count)</c>, the newest last.</summary>
    private T[] _items;

    public LifoStore(int maxSize) => _items = new T[FirstCapacity(maxSize)];

    public override void Add(T item)
    {
        int count = Count;
        if (count == _items.Length)
        {
            Array.Resize(ref _items, Grow(count));
        }

        _items[count] = item;
        Count = count + 1;
    }

    public override T Take()
    {
        Debug.Assert(Count > 0, "take from an empty store");
        int last = Count - 1;
        T item = _items[last];
        _items[last] = default!;
        Count = last;
        return item;
    }

    public override void UndoAdd()
    {
        int last = Count - 1;
        _items[last] = default!;
        Count = last;
    }

    public override int Clear() => ClearAll(_items);
}

/// <summary>
/// Smallest first: a binary min-heap ordered by the comparer, then by insertion sequence, so equal items leave in
/// the order they came (a heap alone is not stable).
/// </summary>
/// <remarks>
/// The comparer is user code that may throw. Both sifts therefore run in two passes: the first only compares, to
/// find where the moving entry lands; the second only moves entries along that path. A comparer that throws leaves
/// the heap exactly as it was, so no item is lost or duplicated.
/// </remarks>
internal sealed class PriorityStore<T> : QueueStore<T>
{
    private readonly IComparer<T> _comparer;

    /// <summary>Heap in positions <c>[0, Count)</c>: every entry orders at or after its parent.</summary>
    private Entry[] _heap;

    /// <summary>Sequence number of the next added item; it breaks ties between equal items.</summary>
    private long _nextSequence;

    public PriorityStore(int maxSize, IComparer<T> comparer)
    {
        _comparer = comparer;
        _heap = new Entry[FirstCapacity(maxSize)];
    }

    public override void Add(T item)
    {
        int count = Count;
        if (count == _heap.Length)
        {
            Array.Resize(ref _heap, Grow(count));
        }

        Entry[] heap = _heap;
        var entry = new Entry(item, _nextSequence);

        // Pass 1 (may throw): how far up does the new entry go?
        int target = count;
        while (target > 0)
        {
            int parent = (target - 1) >> 1;
            if (!Precedes(entry, heap[parent]))
            {
                break;
            }

            target = parent;
        }

        // Pass 2 (cannot throw): shift the ancestors between the new leaf and the target down one level.
        int index = count;
        while (index != target)
        {
            int parent = (index - 1) >> 1;
            heap[index] = heap[parent];
            index = parent;
        }

        heap[target] = entry;
        _nextSequence++;
        Count = count + 1;
    }

    public override T Take()
    {
        Debug.Assert(Count > 0, "take from an empty store");
        Entry[] heap = _heap;
        T item = heap[0].Item;
        int last = Count - 1;
        Entry moved = heap[last];

        // Pass 1 (may throw): where does the last entry land when sifted down from the root, over [0, last)?
        int target = 0;
        while (true)
        {
            int child = (target << 1) + 1;
            if (child >= last)
            {
                break;
            }

            if (child + 1 < last && Precedes(heap[child + 1], heap[child]))
            {
                child++;
            }

            if (!Precedes(heap[child], moved))
            {
                break;
            }

            target = child;
        }

        // Pass 2 (cannot throw): the sift path is the target's ancestor chain. In 1-based numbering the ancestors
        // of k are the prefixes of k's binary digits, so walk them from the root and lift each entry one level.
        int k = target + 1;
        int depth = 0;
        for (int rest = k; rest > 1; rest >>= 1)
        {
            depth++;
        }

        int index = 0;
        for (int shift = depth - 1; shift >= 0; shift--)
        {
            int child = (k >> shift) - 1;
            heap[index] = heap[child];
            index = child;
        }

        heap[last] = default;
        if (last > 0)
        {
            heap[target] = moved;
        }

        Count = last;
        return item;
    }

    /// <remarks>
    /// The added entry went up its leaf's ancestor chain to a target, and <see cref="Add"/>'s second pass moved the
    /// entries between them one level down that chain. Found by its sequence number (the newest), it is taken out and
    /// those entries move back up: no comparison.
    /// </remarks>
    public override void UndoAdd()
    {
        Entry[] heap = _heap;
        int leaf = Count - 1;
        long sequence = _nextSequence - 1;
        int target = leaf;
        int depth = 0;
        while (heap[target].Sequence != sequence)
        {
            target = (target - 1) >> 1;
            depth++;
        }

        // In 1-based numbering the chain from the target down to the leaf is the leaf's binary prefixes.
        int k = leaf + 1;
        int index = target;
        for (int shift = depth - 1; shift >= 0; shift--)
        {
            int child = (k >> shift) - 1;
            heap[index] = heap[child];
            index = child;
        }

        heap[leaf] = default;
        _nextSequence = sequence;
        Count = leaf;
    }

    public override int Clear() => ClearAll(_heap);

    private bool Precedes(in Entry a, in Entry b)
    {
        int order = _comparer.Compare(a.Item, b.Item);
        return order < 0 || (order == 0 && a.Sequence < b.Sequence);
    }

    private readonly struct Entry(T item, long sequence)
    {
        public readonly T Item = item;
        public readonly long Sequence = sequence;
    }
}
