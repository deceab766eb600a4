using System.Threading.Channels;
using AsyncPrimitives;
using BenchmarkDotNet.Attributes;
using NitoQueue = Nito.AsyncEx.AsyncProducerConsumerQueue<int>;
using VsQueue = Microsoft.VisualStudio.Threading.AsyncQueue<int>;

namespace AsyncTools.Benchmarks;

// The queue benchmarks, each against Channel<T> (the baseline) and the peers: Nito.AsyncEx's AsyncProducerConsumerQueue
// and Microsoft.VisualStudio.Threading's AsyncQueue (unbounded: it has no back-pressure, so it runs only where the
// bound is never reached). Three of them have a fixed hand-off pattern whose verdict does not depend on scheduling:
//   QueueBufferedBenchmarks   items already there: put 1024, get 1024, one thread; no operation waits.
//   QueueHandOffBenchmarks    consumer always waiting: get (parks), put (hands the item over), collect; one thread.
//   QueuePingPongBenchmarks   one item in flight between two tasks: every get parks and every put wakes it (pool).
// The streaming ones (1 or 4 producers and consumers through a queue bounded at 1024) are what a pipeline does, but
// how often a side parks depends on how the two threads happen to be scheduled: their ratios swing between runs on a
// 2-core machine; the Completed Work Items column (wake-ups through the pool per item) shows which regime a run was in.

/// <summary>Shared scenario for the streaming queue benchmarks: 1M ints through a queue bounded at 1024.</summary>
public abstract class QueueBenchmarkBase
{
    public const int Items = 1_000_000;
    public const int Capacity = 1024;

    public static Channel<int> NewChannel() => Channel.CreateBounded<int>(new BoundedChannelOptions(Capacity));

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

    protected static Task<long> NitoAsync(int producers)
    {
        var queue = new NitoQueue(Capacity);
        return RunAsync(
            producers,
            async n =>
            {
                for (int i = 0; i < n; i++)
                {
                    await queue.EnqueueAsync(i);
                }
            },
            async n =>
            {
                long sum = 0;
                for (int i = 0; i < n; i++)
                {
                    sum += await queue.DequeueAsync();
                }

                return sum;
            });
    }
}

/// <summary>
/// Streaming: 1 producer / 1 consumer, 1M items, bounded(1024), awaiting forms, per item. LIFO and priority reported.
/// Scheduling-dependent (see the file header); the fixed-pattern classes below give the stable verdicts.
/// </summary>
public class QueueSpscBenchmarks : QueueBenchmarkBase
{
    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public Task<long> Channel_WriteAsync_ReadAsync() => ChannelAsync(1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncQueue_PutAsync_GetAsync() => QueueAsync(new AsyncQueue<int>(Capacity), 1);

    /// <summary>Low-water mark at half: waiting producers wake only once the consumer has drained half the queue.</summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncQueue_ResumeSizeHalf_PutAsync_GetAsync() => QueueAsync(new AsyncQueue<int>(Capacity) { ResumeSize = Capacity / 2 }, 1);

    /// <summary>Low-water mark at 0: waiting producers wake only once the consumer has emptied the queue.</summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncQueue_ResumeSize0_PutAsync_GetAsync() => QueueAsync(new AsyncQueue<int>(Capacity) { ResumeSize = 0 }, 1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncLifoQueue_PutAsync_GetAsync() => QueueAsync(new AsyncLifoQueue<int>(Capacity), 1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncPriorityQueue_PutAsync_GetAsync() => QueueAsync(new AsyncPriorityQueue<int>(Capacity), 1);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> Nito_EnqueueAsync_DequeueAsync() => NitoAsync(1);
}

/// <summary>Streaming: 1P/1C, 1M items, bounded(1024), Try first then await, per item. Peers have no such bounded Try form.</summary>
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

/// <summary>Streaming: 4 producers / 4 consumers, 1M items in all, bounded(1024), per item.</summary>
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
    public Task<long> Nito_EnqueueAsync_DequeueAsync_4x4() => NitoAsync(4);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> Channel_TryWrite_TryRead_4x4() => ChannelTryAsync(4);

    [Benchmark(OperationsPerInvoke = Items)]
    public Task<long> AsyncQueue_TryPut_TryGet_4x4() => QueueTryAsync(new AsyncQueue<int>(Capacity), 4);
}

/// <summary>
/// Items already there, per item (one put and one get): on one thread, put 1024 items into an empty queue bounded at
/// 1024, then get them all. Nothing waits and no thread is involved: the queue's own cost per operation.
/// </summary>
public class QueueBufferedBenchmarks
{
    private const int Batch = QueueBenchmarkBase.Capacity;

    private readonly Channel<int> _channel = QueueBenchmarkBase.NewChannel();
    private readonly AsyncQueue<int> _queue = new(Batch);
    private readonly AsyncLifoQueue<int> _lifo = new(Batch);
    private readonly AsyncPriorityQueue<int> _priority = new(Batch);
    private readonly NitoQueue _nito = new(Batch);
    private readonly VsQueue _vs = new();

    [Benchmark(Baseline = true, OperationsPerInvoke = Batch)]
    public async Task<long> Channel_WriteAsync_ReadAsync()
    {
        for (int i = 0; i < Batch; i++)
        {
            await _channel.Writer.WriteAsync(i);
        }

        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            sum += await _channel.Reader.ReadAsync();
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public Task<long> AsyncQueue_PutAsync_GetAsync() => RoundAsync(_queue);

    [Benchmark(OperationsPerInvoke = Batch)]
    public Task<long> AsyncLifoQueue_PutAsync_GetAsync() => RoundAsync(_lifo);

    [Benchmark(OperationsPerInvoke = Batch)]
    public Task<long> AsyncPriorityQueue_PutAsync_GetAsync() => RoundAsync(_priority);

    [Benchmark(OperationsPerInvoke = Batch)]
    public async Task<long> Nito_EnqueueAsync_DequeueAsync()
    {
        for (int i = 0; i < Batch; i++)
        {
            await _nito.EnqueueAsync(i);
        }

        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            sum += await _nito.DequeueAsync();
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public async Task<long> VS_Enqueue_DequeueAsync()
    {
        for (int i = 0; i < Batch; i++)
        {
            _vs.Enqueue(i);
        }

        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            sum += await _vs.DequeueAsync();
        }

        return sum;
    }

    private static async Task<long> RoundAsync(AsyncQueueBase<int> queue)
    {
        for (int i = 0; i < Batch; i++)
        {
            await queue.PutAsync(i);
        }

        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            sum += await queue.GetAsync();
        }

        return sum;
    }
}

/// <summary>
/// Consumer always waiting, per item: on one thread, get from the empty queue (the getter parks), put one item (handed
/// straight to the parked getter), collect it. The park-and-hand-off path of each queue, without the thread pool.
/// </summary>
public class QueueHandOffBenchmarks
{
    private const int Batch = 1024;

    private readonly Channel<int> _channel = QueueBenchmarkBase.NewChannel();
    private readonly AsyncQueue<int> _queue = new(QueueBenchmarkBase.Capacity);
    private readonly NitoQueue _nito = new(QueueBenchmarkBase.Capacity);
    private readonly VsQueue _vs = new();

    [Benchmark(Baseline = true, OperationsPerInvoke = Batch)]
    public async Task<long> Channel_ReadAsync_WriteAsync()
    {
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            ValueTask<int> get = _channel.Reader.ReadAsync();
            await _channel.Writer.WriteAsync(i);
            sum += await get;
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public async Task<long> AsyncQueue_GetAsync_PutAsync()
    {
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            ValueTask<int> get = _queue.GetAsync();
            await _queue.PutAsync(i);
            sum += await get;
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public async Task<long> Nito_DequeueAsync_EnqueueAsync()
    {
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            Task<int> get = _nito.DequeueAsync();
            await _nito.EnqueueAsync(i);
            sum += await get;
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public async Task<long> VS_DequeueAsync_Enqueue()
    {
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            Task<int> get = _vs.DequeueAsync();
            _vs.Enqueue(i);
            sum += await get;
        }

        return sum;
    }
}

/// <summary>
/// One item in flight, per hand-off: task A puts into <c>ping</c> and gets from <c>pong</c>, task B gets from
/// <c>ping</c> and puts into <c>pong</c>. Nearly every get finds its queue empty and parks, so nearly every put wakes a
/// waiter through the thread pool (Completed Work Items ≈ 1): the cross-thread wake-up path.
/// </summary>
public class QueuePingPongBenchmarks
{
    private const int RoundTrips = 5_000;

    [Benchmark(Baseline = true, OperationsPerInvoke = 2 * RoundTrips)]
    public Task Channel()
    {
        Channel<int> ping = QueueBenchmarkBase.NewChannel(), pong = QueueBenchmarkBase.NewChannel();
        return Task.WhenAll(
            Task.Run(async () =>
            {
                for (int i = 0; i < RoundTrips; i++)
                {
                    await ping.Writer.WriteAsync(i);
                    await pong.Reader.ReadAsync();
                }
            }),
            Task.Run(async () =>
            {
                for (int i = 0; i < RoundTrips; i++)
                {
                    await pong.Writer.WriteAsync(await ping.Reader.ReadAsync());
                }
            }));
    }

    [Benchmark(OperationsPerInvoke = 2 * RoundTrips)]
    public Task AsyncQueue()
    {
        AsyncQueue<int> ping = new(QueueBenchmarkBase.Capacity), pong = new(QueueBenchmarkBase.Capacity);
        return Task.WhenAll(
            Task.Run(async () =>
            {
                for (int i = 0; i < RoundTrips; i++)
                {
                    await ping.PutAsync(i);
                    await pong.GetAsync();
                }
            }),
            Task.Run(async () =>
            {
                for (int i = 0; i < RoundTrips; i++)
                {
                    await pong.PutAsync(await ping.GetAsync());
                }
            }));
    }

    [Benchmark(OperationsPerInvoke = 2 * RoundTrips)]
    public Task Nito()
    {
        NitoQueue ping = new(QueueBenchmarkBase.Capacity), pong = new(QueueBenchmarkBase.Capacity);
        return Task.WhenAll(
            Task.Run(async () =>
            {
                for (int i = 0; i < RoundTrips; i++)
                {
                    await ping.EnqueueAsync(i);
                    await pong.DequeueAsync();
                }
            }),
            Task.Run(async () =>
            {
                for (int i = 0; i < RoundTrips; i++)
                {
                    await pong.EnqueueAsync(await ping.DequeueAsync());
                }
            }));
    }

    [Benchmark(OperationsPerInvoke = 2 * RoundTrips)]
    public Task VS()
    {
        VsQueue ping = new(), pong = new();
        return Task.WhenAll(
            Task.Run(async () =>
            {
                for (int i = 0; i < RoundTrips; i++)
                {
                    ping.Enqueue(i);
                    await pong.DequeueAsync();
                }
            }),
            Task.Run(async () =>
            {
                for (int i = 0; i < RoundTrips; i++)
                {
                    pong.Enqueue(await ping.DequeueAsync());
                }
            }));
    }
}
