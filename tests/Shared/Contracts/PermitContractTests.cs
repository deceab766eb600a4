namespace AsyncTools.Testing.Contracts;

/// <summary>
/// A lock or a semaphore under a contract test, seen through one handle (a process's view of it: for the Postgres
/// types, one coordinator). Acquires return a releaser to dispose.
/// </summary>
public interface IPermitGate
{
    ValueTask<IAsyncDisposable> AcquireAsync(CancellationToken cancellationToken = default);

    ValueTask<IAsyncDisposable> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>The non-waiting acquire: null when it fails.</summary>
    ValueTask<IAsyncDisposable?> TryAcquireAsync();
}

/// <summary>
/// What a lock or semaphore promises wherever it runs, in memory (AsyncLock, AsyncSemaphore) or across processes
/// (PostgresLock, PostgresSemaphore): permits are never exceeded, waiters are served in arrival order, a timed-out or
/// cancelled wait takes nothing and leaves no trace, and a waiter behind it is served. One subclass per type (in the
/// style of dotnet/runtime's ChannelTestBase); each test project links this file.
/// </summary>
public abstract class PermitContractTests
{
    /// <summary>How long a wait that a bug could hang is given.</summary>
    protected static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    /// <summary>The permits of the gates <see cref="CreateAsync"/> makes: 1 for a lock.</summary>
    protected abstract int MaxCount { get; }

    /// <summary>Two handles on one new gate: for the in-memory types the same object twice, for the Postgres types
    /// two coordinators (as two processes would have). Skips the test where the type cannot run here.</summary>
    protected abstract Task<(IPermitGate First, IPermitGate Second)> CreateAsync();

    /// <summary>Waits (bounded) until <paramref name="count"/> waiters stand in line.</summary>
    protected abstract Task WaitersAsync(int count);

    /// <summary>The waiters in line now.</summary>
    protected abstract Task<int> WaiterCountAsync();

    [SkippableFact]
    public async Task TryAcquire_TakesUpToMaxCount_ThenFails_UntilAReleaseFromEitherHandle()
    {
        (IPermitGate first, IPermitGate second) = await CreateAsync();
        var held = new List<IAsyncDisposable>();
        for (int i = 0; i < MaxCount; i++)
        {
            held.Add((await (i % 2 == 0 ? first : second).TryAcquireAsync())!);
            held[^1].Should().NotBeNull();
        }

        (await first.TryAcquireAsync()).Should().BeNull();
        (await second.TryAcquireAsync()).Should().BeNull();
        await held[0].DisposeAsync();
        IAsyncDisposable? again = await second.TryAcquireAsync();
        again.Should().NotBeNull();
        await again!.DisposeAsync();
        foreach (IAsyncDisposable permit in held.Skip(1))
        {
            await permit.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task AcquireAsync_WhenFull_ServesWaitersInArrivalOrder_OnePermitAtATime()
    {
        (IPermitGate first, IPermitGate second) = await CreateAsync();
        List<IAsyncDisposable> held = await FillAsync(first);
        var waits = new Task<IAsyncDisposable>[4];
        for (int i = 0; i < waits.Length; i++)
        {
            waits[i] = (i % 2 == 0 ? second : first).AcquireAsync().AsTask();
            await WaitersAsync(i + 1);
        }

        // Each freed permit goes to the longest waiter, and only to it.
        IAsyncDisposable toFree = held[0];
        for (int i = 0; i < waits.Length; i++)
        {
            await toFree.DisposeAsync();
            toFree = await waits[i].WaitAsync(Bound);
            waits.Skip(i + 1).Count(w => w.IsCompleted).Should().Be(0, $"only waiter {i} was due");
        }

        await toFree.DisposeAsync();
        foreach (IAsyncDisposable permit in held.Skip(1))
        {
            await permit.DisposeAsync();
        }

        (await WaiterCountAsync()).Should().Be(0);
    }

    [SkippableFact]
    public async Task TryAcquire_WhileOthersWait_FailsEvenWhenAPermitIsFree()
    {
        (IPermitGate first, IPermitGate second) = await CreateAsync();
        List<IAsyncDisposable> held = await FillAsync(first);
        Task<IAsyncDisposable> waiting = second.AcquireAsync().AsTask();
        await WaitersAsync(1);

        await held[0].DisposeAsync();
        IAsyncDisposable granted = await waiting.WaitAsync(Bound);
        (await first.TryAcquireAsync()).Should().BeNull("the freed permit went to the waiter");
        await granted.DisposeAsync();
        foreach (IAsyncDisposable permit in held.Skip(1))
        {
            await permit.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task AcquireAsync_TimedOut_ThrowsTimeoutException_AndLeavesNoTrace()
    {
        (IPermitGate first, IPermitGate second) = await CreateAsync();
        List<IAsyncDisposable> held = await FillAsync(first);

        await FluentActions.Awaiting(async () => await second.AcquireAsync(TimeSpan.FromMilliseconds(100)))
            .Should().ThrowAsync<TimeoutException>();
        (await WaiterCountAsync()).Should().Be(0);

        await held[0].DisposeAsync();
        IAsyncDisposable? free = await second.TryAcquireAsync();
        free.Should().NotBeNull("the timed-out wait took nothing");
        await free!.DisposeAsync();
        foreach (IAsyncDisposable permit in held.Skip(1))
        {
            await permit.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task AcquireAsync_WithZeroTimeout_TakesAFreePermitNow_OrThrowsNow()
    {
        (IPermitGate first, IPermitGate second) = await CreateAsync();
        IAsyncDisposable now = await second.AcquireAsync(TimeSpan.Zero);
        List<IAsyncDisposable> held = await FillAsync(first, MaxCount - 1);

        await FluentActions.Awaiting(async () => await second.AcquireAsync(TimeSpan.Zero)).Should().ThrowAsync<TimeoutException>();
        (await WaiterCountAsync()).Should().Be(0);
        await now.DisposeAsync();
        foreach (IAsyncDisposable permit in held)
        {
            await permit.DisposeAsync();
        }
    }

    [SkippableFact]
    public async Task AcquireAsync_Cancelled_ThrowsAndLeavesNoTrace_AndTheWaiterBehindIsServed()
    {
        (IPermitGate first, IPermitGate second) = await CreateAsync();
        List<IAsyncDisposable> held = await FillAsync(first);
        using var cancel = new CancellationTokenSource();
        Task<IAsyncDisposable> cancelled = second.AcquireAsync(cancel.Token).AsTask();
        await WaitersAsync(1);
        Task<IAsyncDisposable> behind = first.AcquireAsync().AsTask();
        await WaitersAsync(2);

        cancel.Cancel();
        await FluentActions.Awaiting(() => cancelled.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        await WaitersAsync(1);

        await held[0].DisposeAsync();
        IAsyncDisposable granted = await behind.WaitAsync(Bound);
        await granted.DisposeAsync();
        foreach (IAsyncDisposable permit in held.Skip(1))
        {
            await permit.DisposeAsync();
        }

        (await WaiterCountAsync()).Should().Be(0);
    }

    [SkippableFact]
    public async Task AcquireAsync_WithACancelledToken_ThrowsAtOnce_EvenWhenFree()
    {
        (IPermitGate first, _) = await CreateAsync();
        await FluentActions.Awaiting(async () => await first.AcquireAsync(new CancellationToken(canceled: true)))
            .Should().ThrowAsync<OperationCanceledException>();
        IAsyncDisposable? free = await first.TryAcquireAsync();
        free.Should().NotBeNull("the cancelled call took nothing");
        await free!.DisposeAsync();
    }

    /// <summary>Takes <paramref name="count"/> permits (all of them by default) through <paramref name="gate"/>.</summary>
    private async Task<List<IAsyncDisposable>> FillAsync(IPermitGate gate, int? count = null)
    {
        var held = new List<IAsyncDisposable>();
        for (int i = 0; i < (count ?? MaxCount); i++)
        {
            held.Add(await gate.AcquireAsync(Bound));
        }

        return held;
    }
}
