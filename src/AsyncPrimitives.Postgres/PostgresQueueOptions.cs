namespace AsyncPrimitives.Postgres;

/// <summary>Settings of a <see cref="PostgresQueue{T}"/>, read when it is created; they apply to the deliveries of the
/// process that created it (each process may use its own).</summary>
public sealed class PostgresQueueOptions
{
    /// <summary>The order in which this process's gets take items (default <see cref="QueueOrder.Fifo"/>).</summary>
    public QueueOrder Order { get; set; } = QueueOrder.Fifo;

    /// <summary>
    /// How many deliveries an item gets (default 5, at least 1): when a delivery that was attempt number
    /// <see cref="MaxAttempts"/> ends without completion (it was abandoned, expired, or its process died), the item
    /// moves to the dead-letter table instead of going back in line.
    /// </summary>
    public int MaxAttempts { get; set; } = 5;

    /// <summary>
    /// How long a delivery lasts without a heartbeat; the coordinator's
    /// <see cref="PostgresCoordinatorOptions.LeaseDuration"/> when null. The coordinator renews it every third of it,
    /// for as long as the delivery is neither completed nor abandoned: a long job keeps its item, and the item of a
    /// consumer that died is delivered again at most this long after its last renewal.
    /// </summary>
    public TimeSpan? LeaseDuration { get; set; }
}
