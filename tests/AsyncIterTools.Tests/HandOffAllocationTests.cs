using System.Runtime.Versioning;

namespace AsyncIterTools.Tests;

/// <summary>
/// "Waiting for an item allocates nothing": the concurrent operators hand a completion to a consumer that had to wait
/// without allocating on the net10.0 asset. Every thread's allocations are counted (the hand-off runs on the pool), so
/// these tests run alone.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public sealed class HandOffAllocationTests
{
    /// <summary>The netstandard2.0 asset queues through the only pool API it has, one work item per queueing: at most
    /// this many bytes per wait (the docs say so).</summary>
    private const double NetStandardWorkItemBytes = 200;

    private static readonly bool s_netStandardAsset =
        typeof(AsyncIter).Assembly.GetCustomAttributes(typeof(TargetFrameworkAttribute), false)
            .Cast<TargetFrameworkAttribute>().Single().FrameworkName.StartsWith(".NETStandard", StringComparison.Ordinal);

    public static TheoryData<string> Operators => ["Merge of one", "Merge of four", "MapUnordered"];

    [Theory]
    [MemberData(nameof(Operators))]
    public void WaitingForEachItem_AllocatesNothingPerItem(string shape)
    {
        Func<int, Task> run = shape switch
        {
            "Merge of one" => n => DrainAsync(AsyncIter.Merge(YieldingRange(n))),
            "Merge of four" => n => DrainAsync(AsyncIter.Merge(YieldingRange(n / 4), YieldingRange(n / 4), YieldingRange(n / 4), YieldingRange(n / 4))),
            _ => n => DrainAsync(YieldingRange(n).MapUnordered(static (x, _) => new ValueTask<int>(x), maxConcurrency: 1)),
        };

        // Below 4 B per item, not 0: what other threads of the process allocate meanwhile (work an earlier test left
        // running) is counted too. A wrapper per wait is 32 B per item here, 8 with four sources taking turns.
        BytesPerItem(n => DrainAsync(YieldingRange(n))).Should().BeLessThan(4, "the harness and a yielding source alone allocate nothing per item");
        BytesPerItem(run).Should().BeLessThan(
            s_netStandardAsset ? NetStandardWorkItemBytes : 4,
            "the consumer waits for every item: each completion is handed to it without a wrapper (net10.0)");
    }

    /// <summary>0, 1, 2, ... yielding to the pool before every item; its state machine box is reused, so it allocates
    /// nothing per item.</summary>
    private static async IAsyncEnumerable<int> YieldingRange(int count)
    {
        for (int i = 0; i < count; i++)
        {
            await Task.Yield();
            yield return i;
        }
    }

    private static async Task DrainAsync(IAsyncEnumerable<int> source)
    {
        await foreach (int _ in source.ConfigureAwait(false))
        {
        }
    }

    /// <summary>Bytes every thread allocates per item: the difference between a long and a short run (per-enumeration
    /// costs cancel out), the least of five measurements of each, run on the pool (away from any context).</summary>
    private static double BytesPerItem(Func<int, Task> run, int small = 1_000, int big = 41_000)
    {
        void Run(int n)
        {
            if (!Task.Run(() => run(n)).Wait(TestWork.Bound))
            {
                throw new TimeoutException("the enumeration did not end in time");
            }
        }

        Run(small);
        Run(big); // warm up: JIT, tiering, the pool's threads

        long Measure(int n)
        {
            long least = long.MaxValue;
            for (int attempt = 0; attempt < 5; attempt++)
            {
                long before = GC.GetTotalAllocatedBytes(precise: true);
                Run(n);
                least = Math.Min(least, GC.GetTotalAllocatedBytes(precise: true) - before);
            }

            return least;
        }

        return (double)(Measure(big) - Measure(small)) / (big - small);
    }
}
