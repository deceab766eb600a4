using AsyncPrimitives.Postgres.Tests.Support;
using Npgsql;
using AsyncTools.Testing.Contracts;

namespace AsyncPrimitives.Postgres.Tests.Contracts;

/// <summary>The permit contract, for the Postgres types: each gate is seen through two coordinators.</summary>
[Collection(PostgresCollection.Name)]
public abstract class PostgresPermitContractTests(PostgresServer server) : PermitContractTests, IAsyncLifetime
{
    private readonly PostgresScope _scope = new(server);

    protected sealed override async Task<(IPermitGate First, IPermitGate Second)> CreateAsync()
    {
        Skip.If(PostgresServer.SkipReason is not null, PostgresServer.SkipReason);
        Member a = await _scope.JoinAsync(connection: Connection);
        Member b = await _scope.JoinAsync(connection: Connection);
        return (Open(a.Coordinator), Open(b.Coordinator));
    }

    /// <summary>The gate under test, through <paramref name="coordinator"/>.</summary>
    protected abstract IPermitGate Open(PostgresCoordinator coordinator);

    /// <summary>Sets more of the coordinators' connection strings; null for the server's defaults.</summary>
    protected virtual Action<NpgsqlConnectionStringBuilder>? Connection => null;

    protected sealed override Task WaitersAsync(int count) => _scope.WaitersAsync(count);

    protected sealed override async Task<int> WaiterCountAsync() =>
        (int)await _scope.ScalarAsync<long>("SELECT count(*) FROM @schema.permit_waiters");

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await _scope.DisposeAsync();

    /// <summary>Acquires through a function that returns a lease.</summary>
    protected sealed class Gate(
        Func<CancellationToken, ValueTask<PostgresLease>> acquire,
        Func<TimeSpan, CancellationToken, ValueTask<PostgresLease>> acquireWithin,
        Func<ValueTask<PostgresLease?>> tryAcquire) : IPermitGate
    {
        public async ValueTask<IAsyncDisposable> AcquireAsync(CancellationToken cancellationToken = default) =>
            await acquire(cancellationToken);

        public async ValueTask<IAsyncDisposable> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
            await acquireWithin(timeout, cancellationToken);

        public async ValueTask<IAsyncDisposable?> TryAcquireAsync() => await tryAcquire();
    }
}

public sealed class PostgresLockContractTests(PostgresServer server) : PostgresPermitContractTests(server)
{
    protected override int MaxCount => 1;

    protected override IPermitGate Open(PostgresCoordinator coordinator)
    {
        PostgresLock gate = coordinator.CreateLock("contract");
        return new Gate(gate.AcquireAsync, gate.AcquireAsync, () => gate.TryAcquireAsync());
    }
}

public sealed class PostgresSemaphoreContractTests(PostgresServer server) : PostgresPermitContractTests(server)
{
    protected override int MaxCount => 3;

    protected override IPermitGate Open(PostgresCoordinator coordinator)
    {
        PostgresSemaphore gate = coordinator.CreateSemaphore("contract", MaxCount);
        return new Gate(gate.AcquireAsync, gate.AcquireAsync, () => gate.TryAcquireAsync());
    }
}

/// <summary>The semaphore's contract on a database whose connections start at SERIALIZABLE (set for a database or a
/// role): the coordinator's calls still run at READ COMMITTED.</summary>
public sealed class PostgresSemaphoreOnSerializableDatabaseContractTests(PostgresServer server) : PostgresPermitContractTests(server)
{
    protected override int MaxCount => 3;

    protected override Action<NpgsqlConnectionStringBuilder>? Connection => ServerSettingsTests.Serializable;

    protected override IPermitGate Open(PostgresCoordinator coordinator)
    {
        PostgresSemaphore gate = coordinator.CreateSemaphore("contract", MaxCount);
        return new Gate(gate.AcquireAsync, gate.AcquireAsync, () => gate.TryAcquireAsync());
    }
}
