using AsyncPrimitives.Internal;
using AsyncTools.Testing.Contracts;

namespace AsyncPrimitives.Tests;

// The contracts shared with AsyncPrimitives.Postgres (tests/Shared/Contracts), run against the in-memory types: the
// same behaviour within one process that the Postgres types give across processes. The two "handles" of a primitive
// are the same object.

public sealed class AsyncLockPermitContractTests : PermitContractTests
{
    private AsyncLock? _gate;

    protected override int MaxCount => 1;

    protected override Task<(IPermitGate First, IPermitGate Second)> CreateAsync()
    {
        _gate = new AsyncLock();
        AsyncLock gate = _gate;
        var handle = new InMemoryGate(
            async ct => Release(await gate.AcquireAsync(ct)),
            async (timeout, ct) => Release(await gate.AcquireAsync(timeout, ct)),
            () => gate.TryAcquire(out AsyncLock.Releaser releaser) ? Release(releaser) : null);
        return Task.FromResult<(IPermitGate, IPermitGate)>((handle, handle));
    }

    protected override Task WaitersAsync(int count) => InMemoryGate.WaitersAsync(() => _gate!.Lines, count);

    protected override Task<int> WaiterCountAsync() => Task.FromResult(_gate!.Lines.Waiting);

    private static IAsyncDisposable Release(AsyncLock.Releaser releaser) => new InMemoryGate.Releaser(releaser.Dispose);
}

public sealed class AsyncSemaphorePermitContractTests : PermitContractTests
{
    private AsyncSemaphore? _gate;

    protected override int MaxCount => 3;

    protected override Task<(IPermitGate First, IPermitGate Second)> CreateAsync()
    {
        _gate = new AsyncSemaphore(MaxCount, MaxCount);
        AsyncSemaphore gate = _gate;
        var handle = new InMemoryGate(
            async ct => Release(await gate.AcquireAsync(ct)),
            async (timeout, ct) => Release(await gate.AcquireAsync(timeout, ct)),
            () => gate.TryAcquire() ? new InMemoryGate.Releaser(() => gate.Release()) : null);
        return Task.FromResult<(IPermitGate, IPermitGate)>((handle, handle));
    }

    protected override Task WaitersAsync(int count) => InMemoryGate.WaitersAsync(() => _gate!.Lines, count);

    protected override Task<int> WaiterCountAsync() => Task.FromResult(_gate!.Lines.Waiting);

    private static IAsyncDisposable Release(AsyncSemaphore.Releaser releaser) => new InMemoryGate.Releaser(releaser.Dispose);
}

public sealed class AsyncQueueWorkQueueContractTests : InMemoryWorkQueueContractTests
{
    protected override ContractOrder Order => ContractOrder.Fifo;

    protected override AsyncQueueBase<int> Create() => new AsyncQueue<int>();
}

public sealed class AsyncLifoQueueWorkQueueContractTests : InMemoryWorkQueueContractTests
{
    protected override ContractOrder Order => ContractOrder.Lifo;

    protected override AsyncQueueBase<int> Create() => new AsyncLifoQueue<int>();
}

public sealed class AsyncPriorityQueueWorkQueueContractTests : InMemoryWorkQueueContractTests
{
    protected override ContractOrder Order => ContractOrder.Priority;

    protected override AsyncQueueBase<int> Create() => new AsyncPriorityQueue<int>();
}

public abstract class InMemoryWorkQueueContractTests : WorkQueueContractTests
{
    protected abstract AsyncQueueBase<int> Create();

    protected sealed override Task<(IWorkQueue Producer, IWorkQueue Consumer)> CreateAsync()
    {
        var queue = new Queue(Create());
        return Task.FromResult<(IWorkQueue, IWorkQueue)>((queue, queue));
    }

    private sealed class Queue(AsyncQueueBase<int> queue) : IWorkQueue
    {
        public ValueTask PutAsync(int item) => queue.PutAsync(item);

        public async ValueTask<IWorkItem> GetAsync(CancellationToken cancellationToken = default) =>
            new Work(queue, await queue.GetAsync(cancellationToken));

        public async ValueTask<IWorkItem> GetAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
            new Work(queue, await queue.GetAsync(timeout, cancellationToken));

        public ValueTask<IWorkItem?> TryGetAsync() =>
            new(queue.TryGet(out int item) ? new Work(queue, item) : null);

        public ValueTask JoinAsync(CancellationToken cancellationToken = default) => queue.JoinAsync(cancellationToken);

        public ValueTask JoinAsync(TimeSpan timeout, CancellationToken cancellationToken = default) => queue.JoinAsync(timeout, cancellationToken);

        public ValueTask ShutdownAsync(bool immediate)
        {
            queue.Shutdown(immediate);
            return default;
        }

        public ValueTask<long> CountAsync() => new(queue.Count);

        public ValueTask<long> UnfinishedAsync() => new(queue.UnfinishedTasks);
    }

    private sealed class Work(AsyncQueueBase<int> queue, int item) : IWorkItem
    {
        public int Item => item;

        public ValueTask DoneAsync()
        {
            queue.TaskDone();
            return default;
        }
    }
}

/// <summary>An in-memory lock or semaphore as an <see cref="IPermitGate"/>.</summary>
internal sealed class InMemoryGate(
    Func<CancellationToken, ValueTask<IAsyncDisposable>> acquire,
    Func<TimeSpan, CancellationToken, ValueTask<IAsyncDisposable>> acquireWithin,
    Func<IAsyncDisposable?> tryAcquire) : IPermitGate
{
    public ValueTask<IAsyncDisposable> AcquireAsync(CancellationToken cancellationToken = default) => acquire(cancellationToken);

    public ValueTask<IAsyncDisposable> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        acquireWithin(timeout, cancellationToken);

    public ValueTask<IAsyncDisposable?> TryAcquireAsync() => new(tryAcquire());

    /// <summary>Waiters enqueue when they call, so the count is there at once; bounded all the same.</summary>
    public static async Task WaitersAsync(Func<WaitLines> lines, int count)
    {
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (lines().Waiting != count)
        {
            await Task.Yield();
            bound.Token.ThrowIfCancellationRequested();
        }
    }

    /// <summary>Releases once, when disposed.</summary>
    public sealed class Releaser(Action release) : IAsyncDisposable
    {
        private Action? _release = release;

        public ValueTask DisposeAsync()
        {
            Interlocked.Exchange(ref _release, null)?.Invoke();
            return default;
        }
    }
}
