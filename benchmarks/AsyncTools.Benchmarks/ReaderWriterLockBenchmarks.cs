using AsyncPrimitives;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using DotNextReaderWriterLock = DotNext.Threading.AsyncReaderWriterLock;
using NitoReaderWriterLock = Nito.AsyncEx.AsyncReaderWriterLock;
using VsReaderWriterLock = Microsoft.VisualStudio.Threading.AsyncReaderWriterLock;

namespace AsyncTools.Benchmarks;

/// <summary>
/// Uncontended read and write acquire + release, per pair. The BCL has no async reader-writer lock: the baseline is
/// SemaphoreSlim, what code uses without one. Peers: Nito.AsyncEx, DotNext and Microsoft.VisualStudio.Threading's
/// AsyncReaderWriterLock.
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class UncontendedReaderWriterLockBenchmarks
{
    private readonly SemaphoreSlim _semaphoreSlim = new(1, 1);
    private readonly AsyncReaderWriterLock _lock = new();
    private readonly NitoReaderWriterLock _nito = new();
    private readonly DotNextReaderWriterLock _dotNext = new();
    private readonly VsReaderWriterLock _vs = new();

    [GlobalCleanup]
    public void Cleanup()
    {
        _dotNext.Dispose();
        _vs.Dispose();
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Read")]
    public async Task Read_SemaphoreSlim()
    {
        await _semaphoreSlim.WaitAsync();
        _semaphoreSlim.Release();
    }

    [Benchmark, BenchmarkCategory("Read")]
    public async Task Read_AsyncReaderWriterLock()
    {
        await _lock.AcquireReadAsync();
        _lock.ReleaseRead();
    }

    [Benchmark, BenchmarkCategory("Read")]
    public async Task Read_Nito()
    {
        IDisposable key = await _nito.ReaderLockAsync();
        key.Dispose();
    }

    [Benchmark, BenchmarkCategory("Read")]
    public async Task Read_DotNext()
    {
        await _dotNext.EnterReadLockAsync();
        _dotNext.Release();
    }

    [Benchmark, BenchmarkCategory("Read")]
    public async Task Read_VS()
    {
        VsReaderWriterLock.Releaser releaser = await _vs.ReadLockAsync();
        releaser.Dispose();
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Write")]
    public async Task Write_SemaphoreSlim()
    {
        await _semaphoreSlim.WaitAsync();
        _semaphoreSlim.Release();
    }

    [Benchmark, BenchmarkCategory("Write")]
    public async Task Write_AsyncReaderWriterLock()
    {
        await _lock.AcquireWriteAsync();
        _lock.ReleaseWrite();
    }

    [Benchmark, BenchmarkCategory("Write")]
    public async Task Write_Nito()
    {
        IDisposable key = await _nito.WriterLockAsync();
        key.Dispose();
    }

    [Benchmark, BenchmarkCategory("Write")]
    public async Task Write_DotNext()
    {
        await _dotNext.EnterWriteLockAsync();
        _dotNext.Release();
    }

    [Benchmark, BenchmarkCategory("Write")]
    public async Task Write_VS()
    {
        VsReaderWriterLock.Releaser releaser = await _vs.WriteLockAsync();
        releaser.Dispose();
    }
}

/// <summary>
/// 8 tasks × 1000 × (acquire; try { Task.Yield } finally { release }), every 8th acquire a writer, per acquire. The
/// baseline is SemaphoreSlim, taken exclusively for readers and writers alike (what code does without a reader-writer
/// lock). Every row runs this one loop; only the lock differs. Each row notes the acquires that had to wait in the
/// <see cref="WaitCounter"/> <see cref="Run"/> gives each task (shown by the interleaved report): a wait is resumed
/// through the pool, so work items per acquire are 1 (the yield) plus waits per acquire, and a lock that waits less
/// often needs fewer pool hops.
/// </summary>
public class ContendedReaderWriterLockBenchmarks
{
    private const int Tasks = 8;
    private const int Iterations = 1000;
    private const int WriterEvery = 8;

    [Benchmark(Baseline = true, OperationsPerInvoke = Tasks * Iterations)]
    public Task SemaphoreSlim()
    {
        var gate = new SemaphoreSlim(1, 1);
        return Run(async waits =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                Task acquire = gate.WaitAsync();
                waits.Note(acquire.IsCompleted);
                await acquire;
                try
                {
                    await Task.Yield();
                }
                finally
                {
                    gate.Release();
                }
            }
        });
    }

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task AsyncReaderWriterLock()
    {
        var gate = new AsyncReaderWriterLock();
        return Run(async waits =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                bool writer = i % WriterEvery == 0;
                ValueTask<AsyncReaderWriterLock.Releaser> acquire = writer ? gate.AcquireWriteAsync() : gate.AcquireReadAsync();
                waits.Note(acquire.IsCompleted);
                await acquire;
                try
                {
                    await Task.Yield();
                }
                finally
                {
                    if (writer)
                    {
                        gate.ReleaseWrite();
                    }
                    else
                    {
                        gate.ReleaseRead();
                    }
                }
            }
        });
    }

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task Nito()
    {
        var gate = new NitoReaderWriterLock();
        return Run(async waits =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                Task<IDisposable> acquire = (i % WriterEvery == 0 ? gate.WriterLockAsync() : gate.ReaderLockAsync()).AsTask();
                waits.Note(acquire.IsCompleted);
                IDisposable key = await acquire;
                try
                {
                    await Task.Yield();
                }
                finally
                {
                    key.Dispose();
                }
            }
        });
    }

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public async Task DotNext()
    {
        using var gate = new DotNextReaderWriterLock();
        await Run(async waits =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                ValueTask acquire = i % WriterEvery == 0 ? gate.EnterWriteLockAsync() : gate.EnterReadLockAsync();
                waits.Note(acquire.IsCompleted);
                await acquire;
                try
                {
                    await Task.Yield();
                }
                finally
                {
                    gate.Release();
                }
            }
        });
    }

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public async Task VS()
    {
        using var gate = new VsReaderWriterLock();
        await Run(async waits =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                VsReaderWriterLock.Awaitable acquire = i % WriterEvery == 0 ? gate.WriteLockAsync() : gate.ReadLockAsync();
                waits.Note(acquire.GetAwaiter().IsCompleted); // the awaitable hands out one awaiter, asked once more by await
                VsReaderWriterLock.Releaser releaser = await acquire;
                try
                {
                    await Task.Yield();
                }
                finally
                {
                    releaser.Dispose();
                }
            }
        });
    }

    /// <summary>Runs <paramref name="body"/> on <see cref="Tasks"/> tasks at once, each with a counter of its waits.</summary>
    private static Task Run(Func<WaitCounter, Task> body)
    {
        var tasks = new Task[Tasks];
        for (int t = 0; t < Tasks; t++)
        {
            tasks[t] = Task.Run(async () =>
            {
                var waits = new WaitCounter();
                await body(waits);
                waits.AddToTotal();
            });
        }

        return Task.WhenAll(tasks);
    }
}
