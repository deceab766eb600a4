using System.Threading.Channels;
using AsyncPrimitives;
using BenchmarkDotNet.Attributes;

namespace AsyncTools.Benchmarks;

/// <summary>Shared scenario for the queue benchmarks: 1M ints through a queue bounded at 1024.</summary>
public abstract class QueueBenchmarkBase
{
    public const int Items = 1_000_000;
    public const int Capacity = 1024;

    protected static Channel<int> NewChannel() => Channel.CreateBounded<int>(new BoundedChannelOptions(Capacity));

    /// <summary>Runs <paramref name="producers"/> producer tasks and as many consumer tasks, each moving Items / producers items.</summary>
    protected static async Task<long> RunAsync(int producers, Func<int, Task> produce, Func<int, Task<long>> consume)
    {
        int perTask = Items / producers;
        var tasks = new Task[producers];
        var consumers = new Task<long>[producers];
        for (int i = 0; i < producers; i++)
        {
            tasks[i] = Task.Run(() => produce(perTask));
            consumers[i] = Task.Run(() => consume(perTask));
        }

        await Task.WhenAll(tasks);
        long sum = 0;
        foreach (Task<long> c in consumers)
        {
            sum += await c;
        }

        return sum;
    }

    // Channel: awaiting forms.
    protected static Task<long> ChannelAsync(int producers)
    {
        Channel<int> channel = NewChannel();
        return RunAsync(
            producers,
            async n =>
            {
                for (int i = 0; i < n; i++)
                {
                    await channel.Writer.WriteAsync(i);
                }
            },
            async n =>
            {
                long sum = 0;
                for (int i = 0; i < n; i++)
                {
                    sum += await channel.Reader.ReadAsync();
                }

                return sum;
            });
    }

    // Channel: try first, await only when full/empty.
    protected static Task<long> ChannelTryAsync(int producers)
    {
        Channel<int> channel = NewChannel();
        return RunAsync(
            producers,
            async n =>
            {
                ChannelWriter<int> writer = channel.Writer;
                for (int i = 0; i < n; i++)
                {
                    if (!writer.TryWrite(i))
                    {
                        await writer.WriteAsync(i);
                    }
                }
            },
            async n =>
            {
                ChannelReader<int> reader = channel.Reader;
                long sum = 0;
                for (int i = 0; i < n; i++)
                {
                    if (!reader.TryRead(out int item))
                    {
                        item = await reader.ReadAsync();
                    }

                    sum += item;
                }

                return sum;
            });
    }

    protected static Task<long> QueueAsync(AsyncQueueBase<int> queue, int producers) => RunAsync(
        producers,
        async n =>
        {
            for (int i = 0; i < n; i++)
            {
                await queue.PutAsync(i);
            }
        },
        async n =>
        {
            long sum = 0;
            for (int i = 0; i < n; i++)
            {
                sum += await queue.GetAsync();
            }

            return sum;
        });

    protected static Task<long> QueueTryAsync(AsyncQueueBase<int> queue, int producers) => RunAsync(
        producers,
        async n =>
        {
            for (int i = 0; i < n; i++)
            {
                if (!queue.TryPut(i))
                {
                    await queue.PutAsync(i);
                }
            }
        },
        async n =>
        {
            long sum = 0;
            for (int i = 0; i < n; i++)
            {
                if (!queue.TryGet(out int item))
                {
                    item = await queue.GetAsync();
                }

                sum += item;
            }

            return sum;
        });
}

/// <summary>
/// 1 producer / 1 consumer, 1M items, bounded(1024), awaiting forms: target AsyncQueue ≤ 1.0 × Channel WriteAsync/ReadAsync, 0 B per item.
/// LIFO and priority reported.
/// </summary>
[MemoryDiagnoser]
public class QueueSpscBenchmarks : QueueBenchmarkBase
{
    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public Task<long> Channel_WriteAsync_ReadAsync() => ChannelAsync(1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncQueue_PutAsync_GetAsync() => QueueAsync(new AsyncQueue<int>(Capacity), 1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncLifoQueue_PutAsync_GetAsync() => QueueAsync(new AsyncLifoQueue<int>(Capacity), 1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncPriorityQueue_PutAsync_GetAsync() => QueueAsync(new AsyncPriorityQueue<int>(Capacity), 1);
}

/// <summary>1P/1C, 1M items, bounded(1024), Try first then await: target AsyncQueue ≤ 1.2 × Channel Try loops, 0 B per item.</summary>
[MemoryDiagnoser]
public class QueueSpscTryBenchmarks : QueueBenchmarkBase
{
    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public Task<long> Channel_TryWrite_TryRead() => ChannelTryAsync(1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncQueue_TryPut_TryGet() => QueueTryAsync(new AsyncQueue<int>(Capacity), 1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncLifoQueue_TryPut_TryGet() => QueueTryAsync(new AsyncLifoQueue<int>(Capacity), 1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncPriorityQueue_TryPut_TryGet() => QueueTryAsync(new AsyncPriorityQueue<int>(Capacity), 1);
}

/// <summary>4 producers / 4 consumers, 1M items in all, bounded(1024), awaiting forms: reported.</summary>
[MemoryDiagnoser]
public class QueueMpmcBenchmarks : QueueBenchmarkBase
{
    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public Task<long> Channel_WriteAsync_ReadAsync_4x4() => ChannelAsync(4);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncQueue_PutAsync_GetAsync_4x4() => QueueAsync(new AsyncQueue<int>(Capacity), 4);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncLifoQueue_PutAsync_GetAsync_4x4() => QueueAsync(new AsyncLifoQueue<int>(Capacity), 4);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncPriorityQueue_PutAsync_GetAsync_4x4() => QueueAsync(new AsyncPriorityQueue<int>(Capacity), 4);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> Channel_TryWrite_TryRead_4x4() => ChannelTryAsync(4);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncQueue_TryPut_TryGet_4x4() => QueueTryAsync(new AsyncQueue<int>(Capacity), 4);
}
