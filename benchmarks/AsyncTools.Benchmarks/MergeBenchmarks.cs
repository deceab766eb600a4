using System.Runtime.CompilerServices;
using System.Threading.Channels;
using AsyncIterTools;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using IxMerge = System.Linq.AsyncEnumerableEx;

namespace AsyncTools.Benchmarks;

/// <summary>
/// Merge of 8 sources. Target: AsyncIter.Merge faster than System.Interactive.Async's Merge (the peer), and fair (see
/// <see cref="MergeFairness"/>, printed by <c>--fairness</c>). Baseline: the BCL way, one pump task per source into a
/// Channel bounded at 8 (one item per source, as Merge holds). Per item. Two kinds of source: synchronously completing
/// (the merge's own overhead dominates) and yielding before every item (really asynchronous).
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class MergeBenchmarks
{
    public const int Sources = 8;
    public const int SyncItemsPerSource = 25_000;
    public const int YieldingItemsPerSource = 2_000;

    [Benchmark(Baseline = true, OperationsPerInvoke = Sources * SyncItemsPerSource), BenchmarkCategory("Sync")]
    public Task<long> Sync_ChannelPumps() => SumAsync(MergeSources.ChannelMerge(MergeSources.Sync(SyncItemsPerSource)));

    [Benchmark(OperationsPerInvoke = Sources * SyncItemsPerSource), BenchmarkCategory("Sync")]
    public Task<long> Sync_IxMerge() => SumAsync(IxMerge.Merge(MergeSources.Sync(SyncItemsPerSource)));

    [Benchmark(OperationsPerInvoke = Sources * SyncItemsPerSource), BenchmarkCategory("Sync")]
    public Task<long> Sync_AsyncIterMerge() => SumAsync(AsyncIter.Merge(MergeSources.Sync(SyncItemsPerSource)));

    [Benchmark(Baseline = true, OperationsPerInvoke = Sources * YieldingItemsPerSource), BenchmarkCategory("Yielding")]
    public Task<long> Yielding_ChannelPumps() => SumAsync(MergeSources.ChannelMerge(MergeSources.Yielding(YieldingItemsPerSource)));

    [Benchmark(OperationsPerInvoke = Sources * YieldingItemsPerSource), BenchmarkCategory("Yielding")]
    public Task<long> Yielding_IxMerge() => SumAsync(IxMerge.Merge(MergeSources.Yielding(YieldingItemsPerSource)));

    [Benchmark(OperationsPerInvoke = Sources * YieldingItemsPerSource), BenchmarkCategory("Yielding")]
    public Task<long> Yielding_AsyncIterMerge() => SumAsync(AsyncIter.Merge(MergeSources.Yielding(YieldingItemsPerSource)));

    private static async Task<long> SumAsync(IAsyncEnumerable<int> source)
    {
        long sum = 0;
        await foreach (int item in source)
        {
            sum += item;
        }

        return sum;
    }
}

/// <summary>The 8 sources, and the Channel-based merge that is the BCL baseline.</summary>
public static class MergeSources
{
    /// <summary>8 synchronously completing sources; source <c>s</c> yields <c>s</c> <paramref name="perSource"/> times.</summary>
    public static IAsyncEnumerable<int>[] Sync(int perSource) =>
        Enumerable.Range(0, MergeBenchmarks.Sources).Select(s => (IAsyncEnumerable<int>)new ConstantSource(s, perSource)).ToArray();

    /// <summary>8 sources that yield the thread before every item; source <c>s</c> yields <c>s</c> <paramref name="perSource"/> times.</summary>
    public static IAsyncEnumerable<int>[] Yielding(int perSource) =>
        Enumerable.Range(0, MergeBenchmarks.Sources).Select(s => YieldingConstant(s, perSource)).ToArray();

    public static async IAsyncEnumerable<int> ChannelMerge(IAsyncEnumerable<int>[] sources, [EnumeratorCancellation] CancellationToken ct = default)
    {
        var channel = Channel.CreateBounded<int>(new BoundedChannelOptions(sources.Length) { SingleReader = true });
        int remaining = sources.Length;
        foreach (IAsyncEnumerable<int> source in sources)
        {
            _ = Task.Run(async () =>
            {
                try
                {
                    await foreach (int item in source.WithCancellation(ct))
                    {
                        await channel.Writer.WriteAsync(item, ct);
                    }
                }
                finally
                {
                    if (Interlocked.Decrement(ref remaining) == 0)
                    {
                        channel.Writer.TryComplete();
                    }
                }
            });
        }

        await foreach (int item in channel.Reader.ReadAllAsync(ct))
        {
            yield return item;
        }
    }

    private static async IAsyncEnumerable<int> YieldingConstant(int value, int count)
    {
        for (int i = 0; i < count; i++)
        {
            await Task.Yield();
            yield return value;
        }
    }

    private sealed class ConstantSource(int value, int count) : IAsyncEnumerable<int>
    {
        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) => new Enumerator(value, count);

        private sealed class Enumerator(int value, int count) : IAsyncEnumerator<int>
        {
            private int _left = count;

            public int Current => value;

            public ValueTask<bool> MoveNextAsync() => new(_left-- > 0);

            public ValueTask DisposeAsync() => default;
        }
    }
}

/// <summary>
/// Fairness report (<c>--fairness</c>): for each merge of 8 equal sources, each source's share of the first half of the
/// output. A fair merge gives every source 12.5 %.
/// </summary>
public static class MergeFairness
{
    public static async Task ReportAsync(TextWriter output, int perSource = 10_000)
    {
        output.WriteLine($"## Merge fairness: share of the first half of the output, 8 sources x {perSource} items ({perSource / 5} for the yielding sources)");
        output.WriteLine();
        output.WriteLine("| Merge | Sources | " + string.Join(" | ", Enumerable.Range(0, MergeBenchmarks.Sources).Select(s => $"s{s}")) + " | max/min |");
        output.WriteLine("|---|---|" + string.Concat(Enumerable.Repeat("---|", MergeBenchmarks.Sources)) + "---|");
        foreach ((string kind, Func<int, IAsyncEnumerable<int>[]> make, int count) in new (string, Func<int, IAsyncEnumerable<int>[]>, int)[]
        {
            ("sync", MergeSources.Sync, perSource),
            ("yielding", MergeSources.Yielding, perSource / 5),
        })
        {
            await RowAsync(output, "AsyncIter.Merge", kind, count, AsyncIter.Merge(make(count)));
            await RowAsync(output, "Ix Merge", kind, count, IxMerge.Merge(make(count)));
            await RowAsync(output, "Channel pumps", kind, count, MergeSources.ChannelMerge(make(count)));
        }

        output.WriteLine();
    }

    private static async Task RowAsync(TextWriter output, string name, string kind, int perSource, IAsyncEnumerable<int> merged)
    {
        int half = MergeBenchmarks.Sources * perSource / 2;
        int[] counts = new int[MergeBenchmarks.Sources];
        int seen = 0;
        await foreach (int source in merged)
        {
            if (seen++ < half)
            {
                counts[source]++;
            }
        }

        double min = counts.Min();
        string ratio = min == 0 ? "inf" : (counts.Max() / min).ToString("0.00");
        output.WriteLine($"| {name} | {kind} | " + string.Join(" | ", counts.Select(c => (100.0 * c / half).ToString("0.0") + " %")) + $" | {ratio} |");
    }
}
