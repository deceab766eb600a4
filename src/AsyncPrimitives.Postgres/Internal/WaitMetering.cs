using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// The "AsyncPrimitives.Postgres" meter: the same wait instruments as the in-memory primitives (names in
/// <see cref="MetricNames"/>), for the waits of <see cref="PostgresLock"/>, <see cref="PostgresSemaphore"/> and
/// <see cref="PostgresQueue{T}"/> that had to sleep between calls to the server.
/// </summary>
internal static class PostgresMetrics
{
    /// <summary>The meter's name, which an exporter subscribes to (<c>AddMeter("AsyncPrimitives.Postgres")</c>).</summary>
    public const string MeterName = "AsyncPrimitives.Postgres";

    private static readonly Meter s_meter = new(MeterName, typeof(PostgresMetrics).Assembly.GetName().Version?.ToString());

    /// <summary>Every wait that had to sleep for its turn, in seconds, tagged with its outcome.</summary>
    public static readonly Histogram<double> WaitDuration = MetricNames.CreateWaitDuration(
        s_meter, "How long callers waited for a lock, a permit or an item held elsewhere, for every wait that had to sleep.");

    /// <summary>Callers of this process waiting now.</summary>
    public static readonly UpDownCounter<long> Waiters =
        MetricNames.CreateWaiters(s_meter, "Callers of this process waiting for a lock, a permit or an item now.");
}

/// <summary>
/// The metrics of one wait (kept by its <see cref="ServerWait"/>): started as it first sleeps for its turn, ended once
/// with its outcome (a second end changes nothing). Records nothing, and reads no clock, for a wait served by its first
/// call or while nobody listens.
/// </summary>
/// <param name="kind">The type name (<c>PostgresLock</c>, <c>PostgresSemaphore</c>, <c>PostgresQueue</c>).</param>
/// <param name="name">The lock's, semaphore's or queue's name.</param>
internal struct WaitMetering(string kind, string name)
{
    private bool _started;
    private bool _countsAsWaiter;
    private bool _isTimed;
    private long _startedAt;

    /// <summary>The wait must wait for its turn (it joined a line on the server, or is about to sleep): the first time,
    /// it starts being metered (if anyone listens).</summary>
    public void Queued()
    {
        if (_started)
        {
            return;
        }

        _started = true;
        _isTimed = PostgresMetrics.WaitDuration.Enabled;
        _startedAt = _isTimed ? Stopwatch.GetTimestamp() : 0;
        _countsAsWaiter = PostgresMetrics.Waiters.Enabled;
        if (_countsAsWaiter)
        {
            PostgresMetrics.Waiters.Add(1, MetricNames.Tags(kind, name));
        }
    }

    /// <summary>The wait got what it waited for.</summary>
    public void Acquired() => End(MetricNames.Acquired);

    /// <summary>
    /// The wait failed with <paramref name="error"/>: timed out, cancelled by its caller's token, refused by a shut-down
    /// queue, or ended by the server or the session (<see cref="MetricNames.Error"/>). An exception filter: records
    /// the outcome and returns false, so the exception goes on as if not caught.
    /// </summary>
    public bool Failed(Exception error, CancellationToken cancellationToken)
    {
        End(error switch
        {
            TimeoutException => MetricNames.TimedOut,
            OperationCanceledException when cancellationToken.IsCancellationRequested => MetricNames.Canceled,
            QueueShutDownException => MetricNames.ShutDown,
            _ => MetricNames.Error,
        });
        return false;
    }

    private void End(string outcome)
    {
        if (!_started)
        {
            return;
        }

        _started = false;
        TagList tags = MetricNames.Tags(kind, name);
        if (_countsAsWaiter)
        {
            PostgresMetrics.Waiters.Add(-1, tags);
        }

        if (_isTimed)
        {
            tags.Add(MetricNames.OutcomeTag, outcome);
            PostgresMetrics.WaitDuration.Record((Stopwatch.GetTimestamp() - _startedAt) / (double)Stopwatch.Frequency, tags);
        }
    }
}
