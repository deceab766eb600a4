using AsyncPrimitives.Postgres.Tests.Support;
using Npgsql;
using AsyncTools.Testing.Contracts;

namespace AsyncPrimitives.Postgres.Tests.Contracts;

/// <summary>The work-queue contract, for <see cref="PostgresQueue{T}"/>: a producer and a consumer coordinator.</summary>
[Collection(PostgresCollection.Name)]
public abstract class PostgresQueueContractTests(PostgresServer server) : WorkQueueContractTests, IAsyncLifetime
{
    private readonly PostgresScope _scope = new(server);

    protected sealed override async Task<(IWorkQueue Producer, IWorkQueue Consumer)> CreateAsync()
    {
        Skip.If(PostgresServer.SkipReason is not null, PostgresServer.SkipReason);
        QueueOrder order = Order switch
        {
            ContractOrder.Lifo => QueueOrder.Lifo,
            ContractOrder.Priority => QueueOrder.Priority,
            _ => QueueOrder.Fifo,
        };
        Member producer = await _scope.JoinAsync(connection: Connection);
        Member consumer = await _scope.JoinAsync(connection: Connection);
        return (Open(producer, order), Open(consumer, order));
    }

    /// <summary>Sets more of the coordinators' connection strings; null for the server's defaults.</summary>
    protected virtual Action<NpgsqlConnectionStringBuilder>? Connection => null;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await _scope.DisposeAsync();

    private static Queue Open(Member member, QueueOrder order) =>
        new(member.Coordinator.CreateQueue<int>("contract", new PostgresQueueOptions { Order = order }));

    private sealed class Queue(PostgresQueue<int> queue) : IWorkQueue
    {
        public ValueTask PutAsync(int item) => queue.PutAsync(item, priority: item);

        public async ValueTask<IWorkItem> GetAsync(CancellationToken cancellationToken = default) =>
            new Work(await queue.GetAsync(cancellationToken));

        public async ValueTask<IWorkItem> GetAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
            new Work(await queue.GetAsync(timeout, cancellationToken));

        public async ValueTask<IWorkItem?> TryGetAsync() =>
            await queue.TryGetAsync() is { } delivery ? new Work(delivery) : null;

        public ValueTask JoinAsync(CancellationToken cancellationToken = default) => queue.JoinAsync(cancellationToken);

        public ValueTask JoinAsync(TimeSpan timeout, CancellationToken cancellationToken = default) => queue.JoinAsync(timeout, cancellationToken);

        public ValueTask ShutdownAsync(bool immediate) => queue.ShutdownAsync(immediate);

        public ValueTask<long> CountAsync() => queue.CountAsync();

        public ValueTask<long> UnfinishedAsync() => queue.UnfinishedAsync();
    }

    private sealed class Work(PostgresDelivery<int> delivery) : IWorkItem
    {
        public int Item => delivery.Item;

        public ValueTask DoneAsync() => delivery.CompleteAsync();
    }
}

public sealed class PostgresFifoQueueContractTests(PostgresServer server) : PostgresQueueContractTests(server)
{
    protected override ContractOrder Order => ContractOrder.Fifo;
}

public sealed class PostgresLifoQueueContractTests(PostgresServer server) : PostgresQueueContractTests(server)
{
    protected override ContractOrder Order => ContractOrder.Lifo;
}

public sealed class PostgresPriorityQueueContractTests(PostgresServer server) : PostgresQueueContractTests(server)
{
    protected override ContractOrder Order => ContractOrder.Priority;
}

/// <summary>The FIFO queue's contract on a database whose connections start at SERIALIZABLE: the coordinator's calls
/// still run at READ COMMITTED.</summary>
public sealed class PostgresFifoQueueOnSerializableDatabaseContractTests(PostgresServer server) : PostgresQueueContractTests(server)
{
    protected override ContractOrder Order => ContractOrder.Fifo;

    protected override Action<NpgsqlConnectionStringBuilder>? Connection => ServerSettingsTests.Serializable;
}
