using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace AsyncPrimitives.Internal;

/// <summary>
/// The "AsyncPrimitives" meter and its instruments (names in <see cref="MetricNames"/>). The wait engine records the
/// waits (<see cref="WaitQueue{T, TPolicy}"/>: a wait that queued while someone listened is metered when its outcome is
/// delivered, after the lock), and <see cref="AsyncThread"/> its queued work the same way (<see cref="Start"/>,
/// <see cref="Queued"/>, <see cref="Ended"/>); named queues report their depth here.
/// </summary>
/// <remarks>
/// Nothing here runs while nobody listens: the engine reads <see cref="Instrument.Enabled"/> only when a wait queues
/// (never on a path that serves the caller at once), and measures, tags and records only waits that queued while an
/// instrument was enabled. Measurements are recorded outside every lock of ours, since a listener's callback is user code.
/// </remarks>
internal static class WaitMetrics
{
    /// <summary>The meter's name, which an exporter subscribes to (<c>AddMeter("AsyncPrimitives")</c>).</summary>
    public const string MeterName = "AsyncPrimitives";

    private static readonly Meter s_meter = new(MeterName, typeof(WaitMetrics).Assembly.GetName().Version?.ToString());

    /// <summary>Every wait that had to queue, in seconds, tagged with its outcome.</summary>
    public static readonly Histogram<double> WaitDuration =
        MetricNames.CreateWaitDuration(s_meter, "How long callers waited in line, for every wait that had to queue.");

    /// <summary>Waiters in line.</summary>
    public static readonly UpDownCounter<long> Waiters = MetricNames.CreateWaiters(s_meter, "Callers waiting in line now.");

    /// <summary>Under the owner's lock, as a wait queues: what its metrics will record, read from the instruments now.
    /// All defaults (nothing to record, no clock read) while nobody listens.</summary>
    public static WaitMetering Start()
    {
        bool timed = WaitDuration.Enabled;
        return new WaitMetering
        {
            CountsAsWaiter = Waiters.Enabled,
            IsTimed = timed,
            StartedAt = timed ? Stopwatch.GetTimestamp() : 0,
        };
    }

    /// <summary>Outside every lock, after a wait whose metering <see cref="WaitMetering.CountsAsWaiter"/> queued: counts
    /// it in. It may have ended, and been counted out, on another thread already: the count is a sum, so it comes
    /// right at once.</summary>
    public static void Queued(string kind, string? name) => Waiters.Add(1, MetricNames.Tags(kind, name));

    /// <summary>Outside every lock, as a metered wait's outcome is delivered: counts it out of the waiters and records
    /// its duration with its outcome (<see cref="MetricNames.Acquired"/> when none was set).</summary>
    public static void Ended(in WaitMetering metering, string kind, string? name)
    {
        TagList tags = MetricNames.Tags(kind, name);
        if (metering.CountsAsWaiter)
        {
            Waiters.Add(-1, tags);
        }

        if (metering.IsTimed)
        {
            double seconds = (Stopwatch.GetTimestamp() - metering.StartedAt) / (double)Stopwatch.Frequency;
            tags.Add(MetricNames.OutcomeTag, metering.Outcome ?? MetricNames.Acquired);
            WaitDuration.Record(seconds, tags);
        }
    }

    /// <summary>
    /// <see cref="Ended"/> for a wait that a listener failed as it queued (<see cref="Queued"/> threw): that exception is
    /// the wait's outcome already, so one the listener throws again as the wait is counted out is not reported twice.
    /// </summary>
    public static void EndedQuietly(in WaitMetering metering, string kind, string? name)
    {
        try
        {
            Ended(metering, kind, name);
        }
#pragma warning disable CA1031 // the same faulty listener again: its first exception is the wait's outcome
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    /// <summary>Named queues, weakly held, for <see cref="QueueDepth"/>. Guarded by <see cref="s_queuesLock"/>.</summary>
    private static readonly List<WeakReference<IQueueDepth>> s_queues = [];

    private static readonly Lock s_queuesLock = new();

    /// <summary>Items in each named queue, read when a listener collects.</summary>
    public static readonly ObservableUpDownCounter<long> QueueDepth = s_meter.CreateObservableUpDownCounter(
        MetricNames.QueueDepth, ObserveQueueDepth, "{item}", "Items in each named queue.");

    /// <summary>The size <see cref="s_queues"/> may reach before its collected entries are dropped.</summary>
    private static int s_pruneAt = 16;

    /// <summary>Reports <paramref name="queue"/>'s depth from now on, for as long as it lives (it is held weakly).</summary>
    public static void RegisterQueue(IQueueDepth queue)
    {
        lock (s_queuesLock)
        {
            if (s_queues.Count >= s_pruneAt)
            {
                // Named queues that were collected leave the list here too, so it never grows without listeners.
                s_queues.RemoveAll(static entry => !entry.TryGetTarget(out _));
                s_pruneAt = Math.Max(16, 2 * s_queues.Count);
            }

            s_queues.Add(new WeakReference<IQueueDepth>(queue));
        }
    }

    /// <summary>Entries in <see cref="s_queues"/>, collected queues included until they are dropped (for tests).</summary>
    internal static int RegisteredQueues
    {
        get
        {
            lock (s_queuesLock)
            {
                return s_queues.Count;
            }
        }
    }

    /// <summary>One measurement per kind and name: queues that share both are added up.</summary>
    private static IEnumerable<Measurement<long>> ObserveQueueDepth()
    {
        var live = new List<IQueueDepth>();
        lock (s_queuesLock)
        {
            s_queues.RemoveAll(entry =>
            {
                if (!entry.TryGetTarget(out IQueueDepth? queue))
                {
                    return true;
                }

                live.Add(queue);
                return false;
            });
        }

        var depths = new Dictionary<(string Kind, string Name), long>();
        foreach (IQueueDepth queue in live)
        {
            (string Kind, string Name) key = (queue.Kind, queue.Name!);
            depths[key] = depths.TryGetValue(key, out long depth) ? depth + queue.Count : queue.Count;
        }

        foreach (KeyValuePair<(string Kind, string Name), long> depth in depths)
        {
            yield return new Measurement<long>(depth.Value, MetricNames.Tags(depth.Key.Kind, depth.Key.Name));
        }
    }
}

/// <summary>What <see cref="WaitMetrics.QueueDepth"/> reads of a named queue.</summary>
internal interface IQueueDepth
{
    /// <summary>The type name without generic arity.</summary>
    string Kind { get; }

    /// <summary>The queue's name; never null for a registered queue.</summary>
    string? Name { get; }

    /// <summary>Items in the queue now.</summary>
    int Count { get; }
}

/// <summary>
/// How one wait is metered, decided under the lock when it queued: all defaults (nothing to record) while nobody listens.
/// </summary>
internal struct WaitMetering
{
    /// <summary>Counted in <see cref="WaitMetrics.Waiters"/> (added when the wait is armed, removed when it is delivered).</summary>
    public bool CountsAsWaiter;

    /// <summary>Measured for <see cref="WaitMetrics.WaitDuration"/>: <see cref="StartedAt"/> is its start.</summary>
    public bool IsTimed;

    /// <summary>The <see cref="Stopwatch"/> timestamp at which the wait queued.</summary>
    public long StartedAt;

    /// <summary>The outcome, set by the first line that decides it (a condition's waiter is decided once by the
    /// condition's line, then served again by its lock's line).</summary>
    public string? Outcome;

    /// <summary>Whether anything is to be recorded when the wait is delivered.</summary>
    public readonly bool IsActive => CountsAsWaiter || IsTimed;

    /// <summary>Records <paramref name="outcome"/> unless an earlier line decided it (a condition's waiter is decided
    /// by the condition's line, then served again by its lock's line); writes nothing while the wait is not metered.</summary>
    public void Decide(string outcome)
    {
        if (IsActive)
        {
            Outcome ??= outcome;
        }
    }
}
