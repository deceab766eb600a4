using AsyncIterTools;
using BenchmarkDotNet.Attributes;

namespace AsyncTools.Benchmarks;

/// <summary>
/// <see cref="GatherMapBenchmarks"/>' Map rows over a source that is asynchronous itself: 10,000 items, each read after
/// an <see cref="Task.Yield"/> of the source and projected by a selector that yields too, at most 64 at once. Here the
/// source's <c>MoveNextAsync</c> is often still pending when calls complete, which Map and MapUnordered yield without
/// waiting for it. Baseline: <see cref="Parallel.ForEachAsync{TSource}(IAsyncEnumerable{TSource}, ParallelOptions, Func{TSource, CancellationToken, ValueTask})"/>
/// over the same source, the BCL's bounded loop over an async sequence (it yields nothing, so it does less).
/// </summary>
public class AsyncSourceMapBenchmarks
{
    private const int Items = GatherMapBenchmarks.Items;
    private const int Limit = GatherMapBenchmarks.Limit;

    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public async Task<int> Parallel_ForEachAsync()
    {
        int count = 0;
        await Parallel.ForEachAsync(
            YieldingRange.Create(0, Items),
            new ParallelOptions { MaxDegreeOfParallelism = Limit },
            async (i, ct) =>
            {
                await GatherMapBenchmarks.Selector(i, ct);
                Interlocked.Increment(ref count);
            });
        return count;
    }

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<int> Map() => GatherMapBenchmarks.CountAsync(YieldingRange.Create(0, Items).Map(GatherMapBenchmarks.Selector, Limit));

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<int> MapUnordered() => GatherMapBenchmarks.CountAsync(YieldingRange.Create(0, Items).MapUnordered(GatherMapBenchmarks.Selector, Limit));
}
