using AsyncPrimitives;
using BenchmarkDotNet.Attributes;
using DotNextExclusiveLock = DotNext.Threading.AsyncExclusiveLock;
using NitoLock = Nito.AsyncEx.AsyncLock;
using NitoSemaphore = Nito.AsyncEx.AsyncSemaphore;
using VsSemaphore = Microsoft.VisualStudio.Threading.AsyncSemaphore;

namespace AsyncTools.Benchmarks;

/// <summary>
/// Uncontended acquire + release of an exclusive lock, per pair: target ≤ 0.8 × SemaphoreSlim, 0 B. Peers: Nito.AsyncEx
/// AsyncLock and AsyncSemaphore, DotNext AsyncExclusiveLock, Microsoft.VisualStudio.Threading AsyncSemaphore.
/// </summary>
public class UncontendedLockBenchmarks
{
    private readonly SemaphoreSlim _semaphoreSlim = new(1, 1);
    private readonly AsyncLock _lock = new();
    private readonly AsyncSemaphore _semaphore = new(1, 1);
    private readonly NitoLock _nitoLock = new();
    private readonly NitoSemaphore _nitoSemaphore = new(1);
    private readonly DotNextExclusiveLock _dotNextLock = new();
    private readonly VsSemaphore _vsSemaphore = new(1);

    [Benchmark(Baseline = true)]
    public async Task SemaphoreSlim_WaitAsync_Release()
    {
        await _semaphoreSlim.WaitAsync();
        _semaphoreSlim.Release();
    }

    [Benchmark]
    public async Task AsyncLock_AcquireAsync_Release()
    {
        await _lock.AcquireAsync();
        _lock.Release();
    }

    [Benchmark]
    public async Task AsyncSemaphore_AcquireAsync_Release()
    {
        await _semaphore.AcquireAsync();
        _semaphore.Release();
    }

    [Benchmark]
    public async Task Nito_AsyncLock_LockAsync_Dispose()
    {
        IDisposable key = await _nitoLock.LockAsync();
        key.Dispose();
    }

    [Benchmark]
    public async Task Nito_AsyncSemaphore_WaitAsync_Release()
    {
        await _nitoSemaphore.WaitAsync();
        _nitoSemaphore.Release();
    }

    [Benchmark]
    public async Task DotNext_AsyncExclusiveLock_AcquireAsync_Release()
    {
        await _dotNextLock.AcquireAsync();
        _dotNextLock.Release();
    }

    [Benchmark]
    public async Task VS_AsyncSemaphore_EnterAsync_Dispose()
    {
        VsSemaphore.Releaser releaser = await _vsSemaphore.EnterAsync();
        releaser.Dispose();
    }
}

/// <summary>
/// 8 tasks × 1000 × (acquire; try { Task.Yield } finally { release }), per acquire: target ≤ 1.0 × SemaphoreSlim,
/// 0 B per acquire. Every row runs this one loop; only the lock differs.
/// </summary>
public class ContendedLockBenchmarks
{
    private const int Tasks = 8;
    private const int Iterations = 1000;

    [Benchmark(Baseline = true, OperationsPerInvoke = Tasks * Iterations)]
    public Task SemaphoreSlim()
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

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task AsyncLock()
    {
        var gate = new AsyncLock();
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                await gate.AcquireAsync();
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
    public Task AsyncSemaphore()
    {
        var gate = new AsyncSemaphore(1, 1);
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                await gate.AcquireAsync();
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
    public Task Nito_AsyncLock()
    {
        var gate = new NitoLock();
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                IDisposable key = await gate.LockAsync();
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
    public Task Nito_AsyncSemaphore()
    {
        var gate = new NitoSemaphore(1);
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

    [Benchmark(OperationsPerInvoke = Tasks * Iterations)]
    public Task DotNext_AsyncExclusiveLock()
    {
        var gate = new DotNextExclusiveLock();
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                await gate.AcquireAsync();
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
    public Task VS_AsyncSemaphore()
    {
        var gate = new VsSemaphore(1);
        return Run(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                VsSemaphore.Releaser releaser = await gate.EnterAsync();
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
/// The contended hand-off without the thread pool, per cycle: on one thread, queue a waiter behind the held lock,
/// release (which grants it), and collect the result; the granted waiter now holds the lock for the next cycle.
/// Isolates the primitive's own work per contended wait from scheduling.
/// </summary>
public class ContendedCycleBenchmarks
{
    private readonly SemaphoreSlim _semaphoreSlim = new(0, 1);
    private readonly AsyncLock _lock = new();
    private readonly NitoLock _nitoLock = new();
    private readonly DotNextExclusiveLock _dotNextLock = new();
    private readonly VsSemaphore _vsSemaphore = new(1);
    private IDisposable? _nitoKey;
    private VsSemaphore.Releaser _vsReleaser;

    [GlobalSetup]
    public void Setup()
    {
        _lock.TryAcquire(out _);
        _nitoKey = _nitoLock.Lock();
        _dotNextLock.TryAcquire();
        _vsReleaser = _vsSemaphore.EnterAsync().GetAwaiter().GetResult();
    }

    [Benchmark(Baseline = true)]
    public bool SemaphoreSlim_QueueReleaseCollect()
    {
        Task<bool> wait = _semaphoreSlim.WaitAsync(Timeout.Infinite);
        _semaphoreSlim.Release();
        return wait.GetAwaiter().GetResult();
    }

    [Benchmark]
    public AsyncLock.Releaser AsyncLock_QueueReleaseCollect()
    {
        ValueTask<AsyncLock.Releaser> wait = _lock.AcquireAsync();
        _lock.Release();
        return Collect(wait);
    }

    [Benchmark]
    public IDisposable Nito_AsyncLock_QueueReleaseCollect()
    {
        Task<IDisposable> wait = _nitoLock.LockAsync().AsTask();
        _nitoKey!.Dispose();
        return _nitoKey = wait.GetAwaiter().GetResult();
    }

    [Benchmark]
    public bool DotNext_AsyncExclusiveLock_QueueReleaseCollect()
    {
        ValueTask wait = _dotNextLock.AcquireAsync();
        _dotNextLock.Release();
        Collect(wait);
        return true;
    }

    [Benchmark]
    public VsSemaphore.Releaser VS_AsyncSemaphore_QueueReleaseCollect()
    {
        Task<VsSemaphore.Releaser> wait = _vsSemaphore.EnterAsync();
        _vsReleaser.Dispose();
        return _vsReleaser = wait.GetAwaiter().GetResult();
    }

    /// <summary>The result of a wait its release completed, or (should a primitive complete it later) after waiting for it.</summary>
    internal static T Collect<T>(ValueTask<T> wait) => wait.IsCompleted ? wait.GetAwaiter().GetResult() : wait.AsTask().GetAwaiter().GetResult();

    internal static void Collect(ValueTask wait)
    {
        if (wait.IsCompleted)
        {
            wait.GetAwaiter().GetResult();
        }
        else
        {
            wait.AsTask().GetAwaiter().GetResult();
        }
    }
}
