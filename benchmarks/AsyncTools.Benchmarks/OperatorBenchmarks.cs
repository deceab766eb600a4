using System.Runtime.CompilerServices;
using AsyncIterTools;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace AsyncTools.Benchmarks;

/// <summary>
/// Sequential operators over 1M synchronously completing items (<see cref="SyncRange"/>), per source item. In each category
/// the baseline is a plain compiler async iterator doing the same by hand (target: operator ≤ 1.5 × it, 0 B per item
/// beyond the values it must return), except Batch, whose baseline is the in-box <c>Chunk</c> (target ≤ 1.0 ×; its
/// hand-written iterator is reported next to it). The Source category shows the floor: the bare source and one compiler
/// iterator pass-through, plus in-box LINQ for scale.
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class OperatorBenchmarks
{
    public const int Items = 1_000_000;
    public const int BatchSize = 64;
    public const int GroupSize = 16;

    private static readonly IAsyncEnumerable<int> s_source = new SyncRange(0, Items);
    private static readonly IAsyncEnumerable<int> s_firstHalf = new SyncRange(0, Items / 2);
    private static readonly IAsyncEnumerable<int> s_secondHalf = new SyncRange(Items / 2, Items / 2);

    // ---- Source: the floor ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Items), BenchmarkCategory("Source")]
    public Task<long> Source_CompilerIterator() => SumAsync(PassThrough(s_source));

    [Benchmark(OperationsPerInvoke = Items), BenchmarkCategory("Source")]
    public Task<long> Source_HandWritten() => SumAsync(s_source);

    [Benchmark(OperationsPerInvoke = Items), BenchmarkCategory("Source")]
    public Task<long> Source_Linq_Select_Where() => SumAsync(s_source.Select(static x => x + 1).Where(static x => (x & 1) == 0));

    // ---- Chain ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Items), BenchmarkCategory("Chain")]
    public Task<long> Chain_ByHand() => SumAsync(ChainByHand(s_firstHalf, s_secondHalf));

    [Benchmark(OperationsPerInvoke = Items), BenchmarkCategory("Chain")]
    public Task<long> Chain() => SumAsync(AsyncIter.Chain(s_firstHalf, s_secondHalf));

    // ---- Slice: every other item of the source ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Items), BenchmarkCategory("Slice")]
    public Task<long> Slice_ByHand() => SumAsync(SliceByHand(s_source, 2));

    [Benchmark(OperationsPerInvoke = Items), BenchmarkCategory("Slice")]
    public Task<long> Slice() => SumAsync(s_source.Slice(0, null, 2));

    // ---- Pairwise ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Items), BenchmarkCategory("Pairwise")]
    public async Task<long> Pairwise_ByHand()
    {
        long sum = 0;
        await foreach ((int previous, int current) in PairwiseByHand(s_source))
        {
            sum += previous + current;
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Items), BenchmarkCategory("Pairwise")]
    public async Task<long> Pairwise()
    {
        long sum = 0;
        await foreach ((int previous, int current) in s_source.Pairwise())
        {
            sum += previous + current;
        }

        return sum;
    }

    // ---- Accumulate ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Items), BenchmarkCategory("Accumulate")]
    public Task<long> Accumulate_ByHand() => SumAsync(AccumulateByHand(s_source, static (a, b) => a ^ b));

    [Benchmark(OperationsPerInvoke = Items), BenchmarkCategory("Accumulate")]
    public Task<long> Accumulate() => SumAsync(s_source.Accumulate(static (a, b) => a ^ b));

    // ---- GroupAdjacent: runs of 16 equal keys ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Items), BenchmarkCategory("GroupAdjacent")]
    public async Task<long> GroupAdjacent_ByHand()
    {
        long sum = 0;
        await foreach (List<int> group in GroupAdjacentByHand(s_source, static x => x / GroupSize))
        {
            sum += group.Count;
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Items), BenchmarkCategory("GroupAdjacent")]
    public async Task<long> GroupAdjacent()
    {
        long sum = 0;
        await foreach (IGrouping<int, int> group in s_source.GroupAdjacent(static x => x / GroupSize))
        {
            sum += group.Key;
        }

        return sum;
    }

    // ---- Batch(64) ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Items), BenchmarkCategory("Batch")]
    public Task<long> Batch_Linq_Chunk() => CountBatchesAsync(s_source.Chunk(BatchSize));

    [Benchmark(OperationsPerInvoke = Items), BenchmarkCategory("Batch")]
    public Task<long> Batch_ByHand() => CountBatchesAsync(BatchByHand(s_source, BatchSize));

    [Benchmark(OperationsPerInvoke = Items), BenchmarkCategory("Batch")]
    public Task<long> Batch() => CountBatchesAsync(s_source.Batch(BatchSize));

    // ---- helpers ----

    private static async Task<long> SumAsync(IAsyncEnumerable<int> source)
    {
        long sum = 0;
        await foreach (int item in source)
        {
            sum += item;
        }

        return sum;
    }

    private static async Task<long> CountBatchesAsync(IAsyncEnumerable<int[]> source)
    {
        long sum = 0;
        await foreach (int[] batch in source)
        {
            sum += batch.Length;
        }

        return sum;
    }

    private static async IAsyncEnumerable<int> PassThrough(IAsyncEnumerable<int> source, [EnumeratorCancellation] CancellationToken ct = default)
    {
        await foreach (int item in source.WithCancellation(ct))
        {
            yield return item;
        }
    }

    private static async IAsyncEnumerable<int> ChainByHand(IAsyncEnumerable<int> first, IAsyncEnumerable<int> second, [EnumeratorCancellation] CancellationToken ct = default)
    {
        await foreach (int item in first.WithCancellation(ct))
        {
            yield return item;
        }

        await foreach (int item in second.WithCancellation(ct))
        {
            yield return item;
        }
    }

    private static async IAsyncEnumerable<int> SliceByHand(IAsyncEnumerable<int> source, int step, [EnumeratorCancellation] CancellationToken ct = default)
    {
        long position = 0;
        await foreach (int item in source.WithCancellation(ct))
        {
            if (position++ % step == 0)
            {
                yield return item;
            }
        }
    }

    private static async IAsyncEnumerable<(int, int)> PairwiseByHand(IAsyncEnumerable<int> source, [EnumeratorCancellation] CancellationToken ct = default)
    {
        bool first = true;
        int previous = 0;
        await foreach (int item in source.WithCancellation(ct))
        {
            if (!first)
            {
                yield return (previous, item);
            }

            first = false;
            previous = item;
        }
    }

    private static async IAsyncEnumerable<int> AccumulateByHand(IAsyncEnumerable<int> source, Func<int, int, int> func, [EnumeratorCancellation] CancellationToken ct = default)
    {
        bool first = true;
        int total = 0;
        await foreach (int item in source.WithCancellation(ct))
        {
            total = first ? item : func(total, item);
            first = false;
            yield return total;
        }
    }

    private static async IAsyncEnumerable<List<int>> GroupAdjacentByHand(IAsyncEnumerable<int> source, Func<int, int> keySelector, [EnumeratorCancellation] CancellationToken ct = default)
    {
        List<int>? group = null;
        int key = 0;
        await foreach (int item in source.WithCancellation(ct))
        {
            int k = keySelector(item);
            if (group is not null && EqualityComparer<int>.Default.Equals(k, key))
            {
                group.Add(item);
                continue;
            }

            if (group is not null)
            {
                yield return group;
            }

            group = [item];
            key = k;
        }

        if (group is not null)
        {
            yield return group;
        }
    }

    private static async IAsyncEnumerable<int[]> BatchByHand(IAsyncEnumerable<int> source, int size, [EnumeratorCancellation] CancellationToken ct = default)
    {
        int[] batch = new int[size];
        int count = 0;
        await foreach (int item in source.WithCancellation(ct))
        {
            batch[count++] = item;
            if (count == size)
            {
                yield return batch;
                batch = new int[size];
                count = 0;
            }
        }

        if (count > 0)
        {
            Array.Resize(ref batch, count);
            yield return batch;
        }
    }
}
