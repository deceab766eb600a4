using System.Collections;
using System.Diagnostics;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Groups runs of consecutive items that have equal keys (Python's <c>itertools.groupby</c>): a new group starts
    /// whenever the key changes, so equal keys that are not adjacent form separate groups.
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <typeparam name="TKey">The type of the keys.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="keySelector">Computes an item's key; called once per item, in order.</param>
    /// <param name="comparer">Compares keys; <see langword="null"/> for <see cref="EqualityComparer{T}.Default"/>.</param>
    /// <returns>
    /// The groups in order. Each group's <see cref="IGrouping{TKey, TElement}.Key"/> is the key of its first item;
    /// later items join it while <c>comparer.Equals(group.Key, itemKey)</c>. Groups also implement
    /// <see cref="IReadOnlyList{T}"/>.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="keySelector"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. Unlike Python's lazy groups, each group is collected completely before it is yielded,
    /// so it stays valid after the enumeration moves on; a group is yielded as soon as the first item of the next
    /// group (or the end of the source) is seen. The source is enumerated once with the enumeration token and
    /// disposed when the enumeration ends, stops early, or fails.
    /// </remarks>
    public static IAsyncEnumerable<IGrouping<TKey, T>> GroupAdjacent<T, TKey>(this IAsyncEnumerable<T> source, Func<T, TKey> keySelector, IEqualityComparer<TKey>? comparer = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(keySelector);
        return source.GroupAdjacent((item, _) => new ValueTask<TKey>(keySelector(item)), comparer);
    }

    /// <summary>
    /// Groups runs of consecutive items that have equal keys, computing keys asynchronously.
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <typeparam name="TKey">The type of the keys.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="keySelector">Computes an item's key; receives the enumeration token; called once per item, in order, never overlapping.</param>
    /// <param name="comparer">Compares keys; <see langword="null"/> for <see cref="EqualityComparer{T}.Default"/>.</param>
    /// <returns>The groups in order; each group's key is the key of its first item.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="keySelector"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// Execution is deferred. Each group is collected completely before it is yielded. The source is enumerated once
    /// with the enumeration token and disposed when the enumeration ends, stops early, or fails.
    /// </remarks>
    public static IAsyncEnumerable<IGrouping<TKey, T>> GroupAdjacent<T, TKey>(this IAsyncEnumerable<T> source, Func<T, CancellationToken, ValueTask<TKey>> keySelector, IEqualityComparer<TKey>? comparer = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(keySelector);
        return Impl(source, keySelector, comparer ?? EqualityComparer<TKey>.Default);

        static async IAsyncEnumerable<IGrouping<TKey, T>> Impl(IAsyncEnumerable<T> source, Func<T, CancellationToken, ValueTask<TKey>> keySelector, IEqualityComparer<TKey> comparer, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await using IAsyncEnumerator<T> e = source.GetAsyncEnumerator(cancellationToken);
            if (!await e.MoveNextAsync())
            {
                yield break;
            }

            T item = e.Current;
            var group = new AdjacentGroup<TKey, T>(await keySelector(item, cancellationToken), item);
            while (await e.MoveNextAsync())
            {
                item = e.Current;
                TKey key = await keySelector(item, cancellationToken);
                if (comparer.Equals(group.Key, key))
                {
                    group.Add(item);
                }
                else
                {
                    yield return group;
                    group = new AdjacentGroup<TKey, T>(key, item);
                }
            }

            yield return group;
        }
    }

    /// <summary>A run of adjacent items with equal keys; filled by GroupAdjacent before it is yielded, read-only after.</summary>
    [DebuggerDisplay("Key = {Key}, Count = {Count}")]
    private sealed class AdjacentGroup<TKey, TElement> : IGrouping<TKey, TElement>, IReadOnlyList<TElement>
    {
        private readonly List<TElement> _items;

        public AdjacentGroup(TKey key, TElement first)
        {
            Key = key;
            _items = [first];
        }

        public TKey Key { get; }

        public int Count => _items.Count;

        public TElement this[int index] => _items[index];

        public void Add(TElement item) => _items.Add(item);

        public IEnumerator<TElement> GetEnumerator() => _items.GetEnumerator();

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

        public override string ToString() => $"{Key} ({_items.Count} items)";
    }
}
