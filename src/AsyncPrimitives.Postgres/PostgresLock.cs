using System.Diagnostics;
using AsyncPrimitives.Postgres.Internal;

namespace AsyncPrimitives.Postgres;

/// <summary>
/// A lock shared by every process that uses the same name in the same schema: at most one
/// <see cref="PostgresLease"/> of it is held at a time, across all of them. Create it with
/// <see cref="PostgresCoordinator.CreateLock"/>.
/// </summary>
/// <remarks>
/// <para><b>Fairness.</b> Waiters acquire in arrival order across processes; while anyone waits,
/// <see cref="TryAcquireAsync"/> fails.</para>
/// <para><b>Reentrancy.</b> None: a process that holds the lock and asks again waits (or gets null from
/// <see cref="TryAcquireAsync"/>) like any other.</para>
/// <para><b>Cancellation and timeouts.</b> A token that is already cancelled fails the call at once. A timed-out wait
/// throws <see cref="TimeoutException"/>, a cancelled one <see cref="OperationCanceledException"/>; either leaves
/// nothing on the server (its place in line is removed, or expires by itself if the server cannot be reached). A
/// grant that is already on its way when the token is cancelled wins: the call then returns the lease.</para>
/// <para><b>Failures.</b> When the coordinator's connection fails or the server restarts, waits in progress throw
/// <see cref="PostgresCoordinationException"/> and leases held are lost (<see cref="PostgresLease.Lost"/>); the next
/// call reconnects. A holder that crashes frees the lock as soon as the server sees its connection close, and at the
/// latest <see cref="PostgresCoordinatorOptions.LeaseDuration"/> after its last heartbeat.</para>
/// </remarks>
/// <example>
/// <code>
/// PostgresLock nightly = coordinator.CreateLock("nightly-report");
/// await using (PostgresLease lease = await nightly.AcquireAsync(cancellationToken))
/// {
///     await BuildReportAsync(lease.FencingToken, lease.Lost);
/// }
/// </code>
/// </example>
[DebuggerDisplay("{ToString(),nq}")]
public sealed class PostgresLock
{
    private readonly PermitSet _set;

    internal PostgresLock(PostgresCoordinator coordinator, string name) => _set = new PermitSet(coordinator, 'l', name, 1);

    /// <summary>The lock's name: every process that uses this name (in the same schema) shares the lock.</summary>
    public string Name => _set.Name;

    /// <summary>Takes the lock, waiting in FIFO order while another holder has it.</summary>
    /// <returns>The lease; release it (or dispose it) to give the lock back.</returns>
    /// <inheritdoc cref="PostgresSemaphore.AcquireAsync(CancellationToken)" path="/param|/exception"/>
    public ValueTask<PostgresLease> AcquireAsync(CancellationToken cancellationToken = default) => _set.AcquireAsync(cancellationToken);

    /// <summary>Takes the lock, waiting in FIFO order at most <paramref name="timeout"/>.</summary>
    /// <returns>The lease; release it (or dispose it) to give the lock back.</returns>
    /// <inheritdoc cref="PostgresSemaphore.AcquireAsync(TimeSpan, CancellationToken)" path="/param|/exception"/>
    public ValueTask<PostgresLease> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        _set.AcquireAsync(timeout, cancellationToken);

    /// <summary>Takes the lock if no one holds it and no one waits for it.</summary>
    /// <returns>The lease, or null when the lock is held (by any process, this one included) or has waiters.</returns>
    /// <inheritdoc cref="PostgresSemaphore.TryAcquireAsync(CancellationToken)" path="/param|/exception"/>
    public ValueTask<PostgresLease?> TryAcquireAsync(CancellationToken cancellationToken = default) => _set.TryAcquireAsync(cancellationToken);

    /// <inheritdoc />
    public override string ToString() => $"PostgresLock(name={Name})";
}
