using AsyncPrimitives;

namespace AsyncTools.Testing.Contracts;

/// <summary>The delivery orders both kinds of queue offer.</summary>
public enum ContractOrder
{
    Fifo,
    Lifo,

    /// <summary>Smallest first: the in-memory priority queue compares the items, the Postgres one is given each item as
    /// its priority.</summary>
    Priority,
}

/// <summary>
/// A work queue under a contract test (an item is taken, then marked done), seen through one handle (for the Postgres
/// queue, one coordinator). Items are ints.
/// </summary>
public interface IWorkQueue
{
    ValueTask PutAsync(int item);

    ValueTask<IWorkItem> GetAsync(CancellationToken cancellationToken = default);

    ValueTask<IWorkItem> GetAsync(TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>The non-waiting get: null when the queue is empty.</summary>
    ValueTask<IWorkItem?> TryGetAsync();

    ValueTask JoinAsync(CancellationToken cancellationToken = default);

    ValueTask JoinAsync(TimeSpan timeout, CancellationToken cancellationToken = default);

    ValueTask ShutdownAsync(bool immediate);

    /// <summary>Items waiting to be taken.</summary>
    ValueTask<long> CountAsync();

    /// <summary>Items put and not done.</summary>
    ValueTask<long> UnfinishedAsync();
}

/// <summary>An item taken from an <see cref="IWorkQueue"/>.</summary>
public interface IWorkItem
{
    int Item { get; }

    /// <summary>Marks the item done: <c>TaskDone</c> in memory, a completion in Postgres.</summary>
    ValueTask DoneAsync();
}

/// <summary>
/// What a work queue promises wherever it runs, in memory (AsyncQueue, AsyncLifoQueue, AsyncPriorityQueue, with
/// TaskDone) or across processes (PostgresQueue, with deliveries): its order, waits that a put ends, gets that time out
/// or are cancelled taking nothing, join, and shutdown (plain and immediate) as Python 3.13's asyncio.Queue defines
/// it. One subclass per type and order (in the style of dotnet/runtime's ChannelTestBase); each test project links
/// this file.
/// </summary>
public abstract class WorkQueueContractTests
{
    /// <summary>How long a wait that a bug could hang is given.</summary>
    protected static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    protected abstract ContractOrder Order { get; }

    /// <summary>Two handles on one new empty queue: for the in-memory types the same object twice, for the Postgres
    /// queue two coordinators (as a producer process and a consumer process would have). Skips the test where the
    /// type cannot run here.</summary>
    protected abstract Task<(IWorkQueue Producer, IWorkQueue Consumer)> CreateAsync();

    [SkippableFact]
    public async Task GetAsync_TakesItemsInTheQueueOrder()
    {
        (IWorkQueue producer, IWorkQueue consumer) = await CreateAsync();
        foreach (int item in new[] { 3, 1, 4, 2 })
        {
            await producer.PutAsync(item);
        }

        var taken = new List<int>();
        for (int i = 0; i < 4; i++)
        {
            IWorkItem work = await consumer.GetAsync(Bound);
            taken.Add(work.Item);
            await work.DoneAsync();
        }

        taken.Should().Equal(Order switch
        {
            ContractOrder.Fifo => [3, 1, 4, 2],
            ContractOrder.Lifo => [2, 4, 1, 3],
            _ => [1, 2, 3, 4],
        });
    }

    [SkippableFact]
    public async Task GetAsync_OnAnEmptyQueue_WaitsForAPut()
    {
        (IWorkQueue producer, IWorkQueue consumer) = await CreateAsync();
        Task<IWorkItem> waiting = consumer.GetAsync().AsTask();
        waiting.IsCompleted.Should().BeFalse();

        await producer.PutAsync(7);

        IWorkItem work = await waiting.WaitAsync(Bound);
        work.Item.Should().Be(7);
        await work.DoneAsync();
    }

    [SkippableFact]
    public async Task GetAsync_TimedOutOrCancelled_TakesNothing()
    {
        (IWorkQueue producer, IWorkQueue consumer) = await CreateAsync();
        await FluentActions.Awaiting(async () => await consumer.GetAsync(TimeSpan.FromMilliseconds(100))).Should().ThrowAsync<TimeoutException>();
        await FluentActions.Awaiting(async () => await consumer.GetAsync(TimeSpan.Zero)).Should().ThrowAsync<TimeoutException>();
        using var cancel = new CancellationTokenSource();
        Task<IWorkItem> cancelled = consumer.GetAsync(cancel.Token).AsTask();
        cancel.Cancel();
        await FluentActions.Awaiting(() => cancelled.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        await FluentActions.Awaiting(async () => await consumer.GetAsync(new CancellationToken(canceled: true))).Should().ThrowAsync<OperationCanceledException>();

        await producer.PutAsync(5);
        (await consumer.CountAsync()).Should().Be(1, "none of the failed gets took the item");
        IWorkItem? work = await consumer.TryGetAsync();
        work!.Item.Should().Be(5);
        await work.DoneAsync();
        (await consumer.TryGetAsync()).Should().BeNull();
    }

    [SkippableFact]
    public async Task JoinAsync_WaitsUntilEveryItemIsDone()
    {
        (IWorkQueue producer, IWorkQueue consumer) = await CreateAsync();
        await producer.JoinAsync(TimeSpan.Zero); // nothing unfinished
        await producer.PutAsync(1);
        await producer.PutAsync(2);
        (await producer.UnfinishedAsync()).Should().Be(2);

        Task joined = producer.JoinAsync().AsTask();
        IWorkItem one = await consumer.GetAsync(Bound);
        IWorkItem two = await consumer.GetAsync(Bound);
        (await producer.UnfinishedAsync()).Should().Be(2, "taken is not done");
        await one.DoneAsync();
        await FluentActions.Awaiting(async () => await producer.JoinAsync(TimeSpan.FromMilliseconds(50))).Should().ThrowAsync<TimeoutException>();
        joined.IsCompleted.Should().BeFalse();

        await two.DoneAsync();
        await joined.WaitAsync(Bound);
        (await producer.UnfinishedAsync()).Should().Be(0);
    }

    [SkippableFact]
    public async Task Shutdown_RefusesPuts_DrainsGets_ThenRefusesThem_AndWakesWaitingGetters()
    {
        (IWorkQueue producer, IWorkQueue consumer) = await CreateAsync();
        await producer.PutAsync(1);
        await producer.ShutdownAsync(immediate: false);

        await FluentActions.Awaiting(async () => await producer.PutAsync(2)).Should().ThrowAsync<QueueShutDownException>();
        IWorkItem left = await consumer.GetAsync(Bound);
        left.Item.Should().Be(1, "what was put before the shutdown is still delivered");
        await FluentActions.Awaiting(async () => await consumer.GetAsync()).Should().ThrowAsync<QueueShutDownException>();
        await FluentActions.Awaiting(async () => await consumer.TryGetAsync()).Should().ThrowAsync<QueueShutDownException>();
        await left.DoneAsync();
        await producer.JoinAsync(Bound);
    }

    [SkippableFact]
    public async Task Shutdown_WakesAWaitingGetter_WhichThrows()
    {
        (IWorkQueue producer, IWorkQueue consumer) = await CreateAsync();
        Task<IWorkItem> waiting = consumer.GetAsync().AsTask();

        await producer.ShutdownAsync(immediate: false);

        await FluentActions.Awaiting(() => waiting.WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>();
    }

    [SkippableFact]
    public async Task Shutdown_Immediate_DropsWhatIsLeft_AndEndsTheJoin()
    {
        (IWorkQueue producer, IWorkQueue consumer) = await CreateAsync();
        await producer.PutAsync(1);
        await producer.PutAsync(2);
        Task joined = producer.JoinAsync().AsTask();

        await producer.ShutdownAsync(immediate: true);

        await joined.WaitAsync(Bound);
        (await consumer.CountAsync()).Should().Be(0);
        (await consumer.UnfinishedAsync()).Should().Be(0);
        await FluentActions.Awaiting(async () => await consumer.GetAsync()).Should().ThrowAsync<QueueShutDownException>();
    }
}
