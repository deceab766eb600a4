using System.Diagnostics;
using System.Runtime.CompilerServices;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <content>The keys' table: stripes, each a lock and a chained hash table of the keys held there, with entries kept
/// for reuse. What reads or changes a stripe's table runs under that stripe's lock.</content>
public sealed partial class AsyncKeyedLock<TKey>
{
    /// <summary>What the lock keeps between uses, for tests: bucket slots plus entries kept for reuse, over all stripes
    /// (a snapshot). Bounded once the keys are released, however many were held at once.</summary>
    internal int RetainedSlots
    {
        get
        {
            int slots = 0;
            foreach (Stripe stripe in _stripes)
            {
                lock (stripe.Sync)
                {
                    // The entries themselves, not FreeCount: what is kept, whatever the count says.
                    slots += stripe.Buckets.Length;
                    for (Entry? entry = stripe.FreeEntries; entry is not null; entry = entry.NextInBucket)
                    {
                        slots++;
                    }
                }
            }

            return slots;
        }
    }

    /// <summary>The stripes of a lock on a machine with <paramref name="processorCount"/> processors: the power of two
    /// at or above it, at least 2 and at most 64.</summary>
    internal static int StripeCountFor(int processorCount)
    {
        int stripes = 2;
        while (stripes < processorCount && stripes < 64)
        {
            stripes *= 2;
        }

        return stripes;
    }

    private static int BitCount(int mask)
    {
        int bits = 0;
        for (; mask != 0; mask >>= 1)
        {
            bits++;
        }

        return bits;
    }

    /// <summary>The key's hash, mixed (see <see cref="Mix"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint Hash(TKey key) => Mix(_comparer is null ? EqualityComparer<TKey>.Default.GetHashCode(key) : _comparer.GetHashCode(key));

    /// <summary>Mixes every bit of <paramref name="hash"/> into every bit of the result (MurmurHash3's finalizer), so that
    /// both the low bits (the stripe) and the ones above them (the bucket) spread keys whose hashes differ only in high
    /// bits (multiples of 1024, or of 2^24, say).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint Mix(int hash)
    {
        uint mixed = unchecked((uint)hash);
        mixed ^= mixed >> 16;
        mixed = unchecked(mixed * 0x85EBCA6Bu);
        mixed ^= mixed >> 13;
        mixed = unchecked(mixed * 0xC2B2AE35u);
        return mixed ^ (mixed >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Stripe StripeOf(uint hash) => _stripes[hash & (uint)(_stripes.Length - 1)];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int BucketOf(uint hash, int buckets) => (int)((hash >> _stripeBits) & (uint)(buckets - 1));

    /// <summary>The entry of <paramref name="key"/>, or null when nobody holds it. Stripe lock held.</summary>
    private Entry? Find(Stripe stripe, TKey key, uint hash)
    {
        Entry? entry = stripe.Buckets[BucketOf(hash, stripe.Buckets.Length)];
        if (_comparer is null)
        {
            for (; entry is not null; entry = entry.NextInBucket)
            {
                if (entry.Hash == hash && EqualityComparer<TKey>.Default.Equals(entry.Key, key))
                {
                    return entry;
                }
            }
        }
        else
        {
            for (; entry is not null; entry = entry.NextInBucket)
            {
                if (entry.Hash == hash && _comparer.Equals(entry.Key, key))
                {
                    return entry;
                }
            }
        }

        return null;
    }

    /// <summary>A new entry for <paramref name="key"/>, nobody holding it yet: a reused one if the stripe has one. Stripe lock held.</summary>
    private Entry Add(Stripe stripe, TKey key, uint hash)
    {
        Entry? entry = stripe.FreeEntries;
        if (entry is null)
        {
            entry = new Entry(this, stripe);
        }
        else
        {
            stripe.FreeEntries = entry.NextInBucket;
            stripe.FreeCount--;
        }

        entry.Key = key;
        entry.Hash = hash;
        if (stripe.Count >= stripe.Buckets.Length)
        {
            Rehash(stripe, stripe.Buckets.Length * 2);
        }

        ref Entry? bucket = ref stripe.Buckets[BucketOf(hash, stripe.Buckets.Length)];
        entry.NextInBucket = bucket;
        bucket = entry;
        Volatile.Write(ref stripe.Count, stripe.Count + 1);
        return entry;
    }

    /// <summary>Unlinks a key nobody holds or waits for, and keeps its entry for reuse (its releasers, now of an older
    /// generation, release nothing). Stripe lock held.</summary>
    private void Remove(Stripe stripe, Entry entry)
    {
        Debug.Assert(entry.Holders == 0 && (entry.Line is null || entry.Line.IsEmpty), "only a key nobody holds or waits for is removed");
        ref Entry? link = ref stripe.Buckets[BucketOf(entry.Hash, stripe.Buckets.Length)];
        while (!ReferenceEquals(link, entry))
        {
            link = ref link!.NextInBucket;
        }

        link = entry.NextInBucket;
        Volatile.Write(ref stripe.Count, stripe.Count - 1);
        Volatile.Write(ref entry.Generation, entry.Generation + 1);
        entry.Key = default!;
        entry.NextInBucket = null;
        if (stripe.FreeCount < EntryPoolCapacity)
        {
            entry.NextInBucket = stripe.FreeEntries;
            stripe.FreeEntries = entry;
            stripe.FreeCount++;
        }

        // Give back the table of a burst of keys: halving at a quarter full keeps growth and shrinking amortized O(1).
        if (stripe.Buckets.Length > MinBuckets && stripe.Count < stripe.Buckets.Length / 4)
        {
            Rehash(stripe, stripe.Buckets.Length / 2);
        }
    }

    /// <summary>Moves a stripe's keys to a table of <paramref name="size"/> buckets. Stripe lock held.</summary>
    private void Rehash(Stripe stripe, int size)
    {
        var buckets = new Entry?[size];
        foreach (Entry? head in stripe.Buckets)
        {
            for (Entry? entry = head; entry is not null;)
            {
                Entry? next = entry.NextInBucket;
                ref Entry? bucket = ref buckets[BucketOf(entry.Hash, size)];
                entry.NextInBucket = bucket;
                bucket = entry;
                entry = next;
            }
        }

        stripe.Buckets = buckets;
    }

    /// <summary>One stripe of keys: a lock, a chained hash table of the keys held there, and entries kept for reuse.</summary>
    internal sealed class Stripe
    {
        /// <summary>Guards everything below, and the lines of this stripe's keys.</summary>
        public readonly Lock Sync = new();

        /// <summary>Chains of entries by bucket (<see cref="BucketOf"/>); a power of two long, at least <see cref="MinBuckets"/>.</summary>
        public Entry?[] Buckets = new Entry?[MinBuckets];

        /// <summary>Keys in the table: each has a holder (and perhaps waiters). Written under the lock, read without it.</summary>
        public int Count;

        /// <summary>Released entries kept for reuse, linked through <see cref="Entry.NextInBucket"/>.</summary>
        public Entry? FreeEntries;

        /// <summary>Entries in <see cref="FreeEntries"/>, at most <see cref="EntryPoolCapacity"/>.</summary>
        public int FreeCount;
    }

    /// <summary>A key with a holder: in the table exactly while <see cref="Holders"/> &gt; 0. Guarded by its stripe's lock.</summary>
    internal sealed class Entry(AsyncKeyedLock<TKey> owner, Stripe stripe)
    {
        public readonly AsyncKeyedLock<TKey> Owner = owner;
        public readonly Stripe Stripe = stripe;

        public TKey Key = default!;
        public uint Hash;

        /// <summary>Next entry in the bucket's chain, or in the stripe's free list.</summary>
        public Entry? NextInBucket;

        /// <summary>Callers holding the key, 1 to <see cref="MaxCountPerKey"/>. A release with waiters hands its
        /// hold over without changing it, so a key with waiters always has holders, and is removed only once the last
        /// holder leaves with nobody waiting.</summary>
        public int Holders;

        /// <summary>Bumped each time the entry is removed: releasers of an earlier key are stale.</summary>
        public int Generation;

        /// <summary>The key's FIFO line of waiters, created by its first waiter and kept with the entry when it is reused.</summary>
        public WaitQueue<Releaser, Policy>? Line;
    }
}
