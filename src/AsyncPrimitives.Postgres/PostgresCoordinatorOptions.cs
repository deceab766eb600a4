using System.Text.Json;

namespace AsyncPrimitives.Postgres;

/// <summary>Settings of a <see cref="PostgresCoordinator"/>; read once, when the coordinator is created.</summary>
/// <remarks>
/// Every process that shares locks, semaphores or queues must use the same <see cref="Schema"/>. The other settings
/// may differ between processes: each lease carries its own duration, and the server's clock (<c>now()</c>) decides
/// when it expires.
/// </remarks>
public sealed class PostgresCoordinatorOptions
{
    /// <summary>The schema that holds the tables and functions (default <c>asynctools</c>): lowercase letters, digits
    /// and underscores, starting with a letter or an underscore (not <c>pg_</c>, which PostgreSQL keeps for itself), at most
    /// 63 characters.</summary>
    public string Schema { get; set; } = "asynctools";

    /// <summary>
    /// How long a lock or semaphore lease, or a place in a wait line, lasts without a heartbeat (default 30 seconds,
    /// at least 1 second). The coordinator renews what it holds every third of it. A process that crashes or is cut
    /// off from the server frees what it held at most this long after its last renewal (at once when the server sees
    /// its connection close), and a process that cannot renew sees <see cref="PostgresLease.Lost"/> fire by then.
    /// Shorter frees the permits of a vanished process sooner; longer tolerates longer stalls (a GC pause, a slow
    /// network) before a lease is lost.
    /// </summary>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often a wait checks the server on its own (default 1 second): the backstop for a wake-up
    /// notification that was missed. Waits are normally woken by LISTEN/NOTIFY within milliseconds. Of the waits of
    /// this process on one lock, only the first in line checks (on one semaphore, the first <c>maxCount</c>); the
    /// others sleep until they are among them. The getters of one queue in this process take turns: one check per
    /// interval among them.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How queue items are written and read; <see cref="JsonSerializerOptions.Default"/> when null. The first
    /// <see cref="PostgresCoordinator.CreateQueue{T}"/> makes them read-only (as System.Text.Json's first use of them
    /// does), with System.Text.Json's default resolver when <see cref="JsonSerializerOptions.TypeInfoResolver"/> is
    /// null.</summary>
    public JsonSerializerOptions? JsonSerializerOptions { get; set; }

    /// <summary>The local clock for timeouts, polling and heartbeats; <see cref="TimeProvider.System"/> when null.
    /// Lease expiry is decided by the server's clock.</summary>
    /// <remarks>A provider is user code, and its failures lose nothing: a call whose timer (its timeout's, or a lease's it
    /// was granted) cannot be created fails with the provider's exception and gives back what the server granted it; a
    /// heartbeat whose timer cannot be created ends the session, as a failed LISTEN connection does (waits in progress
    /// fail, leases are lost, the next call opens a new session).</remarks>
    public TimeProvider? TimeProvider { get; set; }
}
