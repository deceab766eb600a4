using System.Diagnostics;
using AsyncIterTools;
using BenchmarkDotNet.Attributes;

namespace AsyncTools.Benchmarks;

/// <summary>
/// 1,000,000 work items that each await <see cref="Task.Yield"/>: GatherAsync(maxConcurrency: 64) against the baseline,
/// WhenAll over a pre-materialized list of all the tasks. BenchmarkDotNet gives time and bytes allocated per item; the
/// peak live memory and the maximum number of live work tasks are printed by <c>--memory</c> (<see cref="GatherMemoryReport"/>).
/// </summary>
public class GatherMemoryBenchmarks
{
    public const int Items = 1_000_000;

    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public Task<int> WhenAll_Materialized() => GatherMemoryReport.WhenAllAsync(Items, probe: null);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<int> GatherAsync_64() => GatherMemoryReport.GatherAsync(Items, probe: null);
}

/// <summary>
/// Counts work items in flight (started, not finished) and samples the live managed heap (after a full collection, so
/// garbage is not counted) every <c>sampleEvery</c> starts.
/// </summary>
public sealed class LiveProbe(int sampleEvery)
{
    private int _live;
    private int _maxLive;
    private long _maxHeap;
    private int _started;

    public int MaxLive => _maxLive;

    public long MaxHeap => _maxHeap;

    public void Enter()
    {
        int live = Interlocked.Increment(ref _live);
        int max;
        while (live > (max = Volatile.Read(ref _maxLive)) && Interlocked.CompareExchange(ref _maxLive, live, max) != max)
        {
        }

        if (Interlocked.Increment(ref _started) % sampleEvery == 0)
        {
            Sample();
        }
    }

    public void Exit() => Interlocked.Decrement(ref _live);

    public void Sample()
    {
        long heap = GC.GetTotalMemory(forceFullCollection: true);
        long max;
        while (heap > (max = Volatile.Read(ref _maxHeap)) && Interlocked.CompareExchange(ref _maxHeap, heap, max) != max)
        {
        }
    }
}

/// <summary>The <c>--memory</c> report: bytes allocated, peak heap and maximum live work tasks, as the item count grows.</summary>
public static class GatherMemoryReport
{
    public const int Limit = 64;

    public static async Task<int> WhenAllAsync(int items, LiveProbe? probe)
    {
        var tasks = new List<Task<int>>(items);
        for (int i = 0; i < items; i++)
        {
            tasks.Add(WorkAsync(probe));
        }

        probe?.Sample();
        int[] results = await Task.WhenAll(tasks);
        return results.Length;
    }

    public static async Task<int> GatherAsync(int items, LiveProbe? probe)
    {
        int[] results = await AsyncIter.GatherAsync(Enumerable.Repeat<Func<CancellationToken, Task<int>>>(_ => WorkAsync(probe), items), Limit);
        return results.Length;
    }

    public static async Task ReportAsync(TextWriter output, int[] sizes)
    {
        output.WriteLine("## GatherAsync(maxConcurrency: 64) vs WhenAll over a materialized list: work items that each await Task.Yield");
        output.WriteLine();
        output.WriteLine("| Method | Items | Max work items in flight | Allocated (MB) | Allocated / item (B) | Peak live heap (MB) | Time (ms) |");
        output.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
        foreach (int items in sizes)
        {
            await RowAsync(output, "WhenAll (materialized)", items, WhenAllAsync);
            await RowAsync(output, "GatherAsync (64)", items, GatherAsync);
        }

        output.WriteLine();
        output.WriteLine("In flight = started and not finished. WhenAll also holds every Task object (finished or not) in its list until the end.");
        output.WriteLine("Peak live heap = the largest GC.GetTotalMemory(forceFullCollection: true) sampled every max(1024, items/16) work starts");
        output.WriteLine("(and once after materializing). GatherAsync's includes the buffer of its results; WhenAll's does not: every sample comes before");
        output.WriteLine("Task.WhenAll allocates its int[] (4 B per item more at its peak). Time includes those collections.");
        output.WriteLine();
    }

    private static async Task RowAsync(TextWriter output, string name, int items, Func<int, LiveProbe?, Task<int>> run)
    {
        await run(1000, null); // warm up the code paths
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        var probe = new LiveProbe(Math.Max(1024, items / 16));
        probe.Sample();
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var watch = Stopwatch.StartNew();
        await run(items, probe);
        watch.Stop();
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        output.WriteLine($"| {name} | {items:N0} | {probe.MaxLive:N0} | {allocated / 1048576.0:0.0} | {(double)allocated / items:0} | {probe.MaxHeap / 1048576.0:0.0} | {watch.Elapsed.TotalMilliseconds:0} |");
    }

    private static async Task<int> WorkAsync(LiveProbe? probe)
    {
        probe?.Enter();
        await Task.Yield();
        probe?.Exit();
        return 1;
    }
}
