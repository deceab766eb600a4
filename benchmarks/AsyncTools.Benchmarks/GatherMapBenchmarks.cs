using System.Threading.Tasks.Dataflow;
using AsyncIterTools;
using BenchmarkDotNet.Attributes;

namespace AsyncTools.Benchmarks;

/// <summary>
/// 10,000 work items that each await <see cref="Task.Yield"/>, at most 64 at once. Targets: GatherAsync, Map and
/// MapUnordered ≤ 1.0 × WhenAll + SemaphoreSlim(64) (the baseline), ≤ 0.8 × Parallel.ForEachAsync, bytes per item ≤ the
/// baseline's, and faster than TPL Dataflow's TransformBlock (EnsureOrdered on for Map, off for MapUnordered).
/// </summary>
public class GatherMapBenchmarks
{
    public const int Items = 10_000;
    public const int Limit = 64;

    private static readonly Func<CancellationToken, Task<int>> s_work = static _ => YieldAsync(1);
    /// <summary>The selector of the Map rows: yields the thread, then returns its element.</summary>
    internal static readonly Func<int, CancellationToken, ValueTask<int>> Selector = static (i, _) => YieldValueAsync(i);

    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public async Task<int> WhenAll_SemaphoreSlim()
    {
        using var gate = new SemaphoreSlim(Limit, Limit);
        var tasks = new Task<int>[Items];
        for (int i = 0; i < Items; i++)
        {
            tasks[i] = ThrottledAsync(gate, i);
        }

        int[] results = await Task.WhenAll(tasks);
        return results.Length;

        static async Task<int> ThrottledAsync(SemaphoreSlim gate, int i)
        {
            await gate.WaitAsync();
            try
            {
                return await YieldAsync(i);
            }
            finally
            {
                gate.Release();
            }
        }
    }

    [Benchmark(OperationsPerInvoke = Items)]
    public async Task<int> WhenAll_Unthrottled()
    {
        var tasks = new Task<int>[Items];
        for (int i = 0; i < Items; i++)
        {
            tasks[i] = YieldAsync(i);
        }

        int[] results = await Task.WhenAll(tasks);
        return results.Length;
    }

    [Benchmark(OperationsPerInvoke = Items)]
    public async Task<int> Parallel_ForEachAsync()
    {
        int[] results = new int[Items];
        await Parallel.ForEachAsync(
            Enumerable.Range(0, Items),
            new ParallelOptions { MaxDegreeOfParallelism = Limit },
            async (i, _) => results[i] = await YieldAsync(i));
        return results.Length;
    }

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<int> Dataflow_TransformBlock_Ordered() => DataflowAsync(ensureOrdered: true);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<int> Dataflow_TransformBlock_Unordered() => DataflowAsync(ensureOrdered: false);

    [Benchmark(OperationsPerInvoke = Items)]
    public async Task<int> GatherAsync()
    {
        int[] results = await AsyncIter.GatherAsync(Enumerable.Repeat(s_work, Items), Limit);
        return results.Length;
    }

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<int> AsCompleted() => CountAsync(AsyncIter.AsCompleted(Enumerable.Repeat(s_work, Items), Limit));

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<int> Map() => CountAsync(new SyncRange(0, Items).Map(Selector, Limit));

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<int> MapUnordered() => CountAsync(new SyncRange(0, Items).MapUnordered(Selector, Limit));

    private static async Task<int> DataflowAsync(bool ensureOrdered)
    {
        var block = new TransformBlock<int, int>(
            static i => YieldAsync(i),
            new ExecutionDataflowBlockOptions { MaxDegreeOfParallelism = Limit, EnsureOrdered = ensureOrdered, SingleProducerConstrained = true });
        for (int i = 0; i < Items; i++)
        {
            block.Post(i);
        }

        block.Complete();
        int count = 0;
        while (await block.OutputAvailableAsync())
        {
            while (block.TryReceive(out int _))
            {
                count++;
            }
        }

        return count;
    }

    /// <summary>Reads <paramref name="results"/> to the end; returns how many there were.</summary>
    internal static async Task<int> CountAsync(IAsyncEnumerable<int> results)
    {
        int count = 0;
        await foreach (int _ in results)
        {
            count++;
        }

        return count;
    }

    private static async Task<int> YieldAsync(int value)
    {
        await Task.Yield();
        return value;
    }

    private static async ValueTask<int> YieldValueAsync(int value)
    {
        await Task.Yield();
        return value;
    }
}
