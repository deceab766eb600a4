using AsyncPrimitives;
using BenchmarkDotNet.Attributes;

namespace AsyncTools.Benchmarks;

/// <summary>Uncontended acquire + release: target ≤ 0.8 × SemaphoreSlim, 0 B.</summary>
[MemoryDiagnoser]
public class UncontendedLockBenchmarks
{
    private readonly SemaphoreSlim _semaphoreSlim = new(1, 1);
    private readonly AsyncLock _lock = new();
    private readonly AsyncSemaphore _semaphore = new(1, 1);

    [Benchmark(Baseline = true)]
    public async Task SemaphoreSlim_WaitAsync_Release()
    {
        await _semaphoreSlim.WaitAsync();
        _semaphoreSlim.Release();
    }

    [Benchmark]
    public async Task AsyncLock_AcquireAsync_Dispose()
    {
        using (await _lock.AcquireAsync())
        {
        }
    }

    [Benchmark]
    public async Task AsyncSemaphore_AcquireAsync_Dispose()
    {
        using (await _semaphore.AcquireAsync())
        {
        }
    }
}

/// <summary>8 tasks × 1000 × (acquire; Task.Yield; release): target ≤ 1.0 × SemaphoreSlim, 0 B per operation.</summary>
[MemoryDiagnoser]
public class ContendedLockBenchmarks
{
    private const int Tasks = 8;
    private const int Iterations = 1000;

    [Benchmark(Baseline = true, OperationsPerInvoke = Tasks * Iterations)]
    public Task SemaphoreSlim_Contended()
    {
        var gate = new SemaphoreSlim(1, 1);
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                await gate.WaitAsync();
                await Task.Yield();
                gate.Release();
            }
        });
    }

    /// <summary>The same loop written the way SemaphoreSlim is used safely: release in a finally.</summary>
    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task SemaphoreSlim_Contended_TryFinally()
    {
        var gate = new SemaphoreSlim(1, 1);
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                await gate.WaitAsync();
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

    /// <summary>The baseline's exact shape (acquire; yield; release, no finally), so only the primitive differs.</summary>
    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task AsyncLock_Contended_Bare()
    {
        var gate = new AsyncLock();
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                await gate.AcquireAsync();
                await Task.Yield();
                gate.Release();
            }
        });
    }

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task AsyncLock_Contended()
    {
        var gate = new AsyncLock();
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                using (await gate.AcquireAsync())
                {
                    await Task.Yield();
                }
            }
        });
    }

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task AsyncSemaphore_Contended()
    {
        var gate = new AsyncSemaphore(1, 1);
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                using (await gate.AcquireAsync())
                {
                    await Task.Yield();
                }
            }
        });
    }

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task TaskYield_Alone() => Run(async () =>
    {
        for (int i = 0; i < Iterations; i++)
        {
            await Task.Yield();
        }
    });

    private static Task Run(Func<Task> body)
    {
        var tasks = new Task[Tasks];
        for (int t = 0; t < Tasks; t++)
        {
            tasks[t] = Task.Run(body);
        }

        return Task.WhenAll(tasks);
    }
}

/// <summary>
/// The contended hand-off without the thread pool: on one thread, queue a waiter behind a held lock, release (which
/// grants it), and collect the result. Isolates the primitive's own work per contended wait from scheduling.
/// </summary>
[MemoryDiagnoser]
public class ContendedCycleBenchmarks
{
    private readonly SemaphoreSlim _semaphoreSlim = new(0, 1);
    private readonly AsyncLock _lock = new();

    [GlobalSetup]
    public void Setup() => _lock.TryAcquire(out _);

    [Benchmark(Baseline = true)]
    public bool SemaphoreSlim_QueueReleaseCollect()
    {
        Task<bool> wait = _semaphoreSlim.WaitAsync(Timeout.Infinite);
        _semaphoreSlim.Release();
        return wait.Result;
    }

    [Benchmark]
    public AsyncLock.Releaser AsyncLock_QueueReleaseCollect()
    {
        ValueTask<AsyncLock.Releaser> wait = _lock.AcquireAsync();
        _lock.Release();
        return wait.GetAwaiter().GetResult(); // the lock stays held by the granted waiter, ready for the next cycle
    }
}
