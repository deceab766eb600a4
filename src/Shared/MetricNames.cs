// Shared source, compiled into every library (they do not depend on each other): the instrument and tag names of
// DESIGN.md's metrics contract, and the one way a wait's tags are built. Shown in each library as its Shared/ folder.
using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace AsyncTools.Shared;

/// <summary>The metrics contract every library follows: instrument names, tag names, outcomes, the tags of a wait.</summary>
internal static class MetricNames
{
    /// <summary>Histogram of seconds: every wait that had to queue, tagged with its <see cref="OutcomeTag"/>.</summary>
    public const string WaitDuration = "asynctools.wait.duration";

    /// <summary>Up-down counter: waiters in line now.</summary>
    public const string Waiters = "asynctools.waiters";

    /// <summary>Observable up-down counter: items in each named queue.</summary>
    public const string QueueDepth = "asynctools.queue.depth";

    /// <summary>Up-down counter: calls running now in a concurrent operator.</summary>
    public const string OperatorInFlight = "asynctools.operator.in_flight";

    /// <summary>The primitive's or queue's <c>Name</c>; omitted when it has none.</summary>
    public const string NameTag = "asynctools.name";

    /// <summary>The type name without generic arity (<c>AsyncQueue</c>, <c>PostgresLock</c>).</summary>
    public const string KindTag = "asynctools.kind";

    /// <summary>How a wait ended: <see cref="Acquired"/>, <see cref="TimedOut"/>, <see cref="Canceled"/>, <see cref="ShutDown"/>, <see cref="Error"/>.</summary>
    public const string OutcomeTag = "asynctools.outcome";

    /// <summary>The concurrent operator (<c>Map</c>, <c>MapUnordered</c>, ...).</summary>
    public const string OperatorTag = "asynctools.operator";

    /// <summary>The wait got what it waited for (a permit, an item, a notification, the result).</summary>
    public const string Acquired = "acquired";

    /// <summary>The wait's timeout expired.</summary>
    public const string TimedOut = "timeout";

    /// <summary>The wait's token was cancelled.</summary>
    public const string Canceled = "canceled";

    /// <summary>The queue was shut down while the caller waited.</summary>
    public const string ShutDown = "shutdown";

    /// <summary>The wait failed: the server or the session (a Postgres wait), or user code called as it queued (a metrics
    /// listener, the time provider creating its timer).</summary>
    public const string Error = "error";

    /// <summary>The unit of <see cref="WaitDuration"/>.</summary>
    public const string Seconds = "s";

    /// <summary>
    /// Bucket boundaries for <see cref="WaitDuration"/>, in seconds, from 10 µs to 5 minutes: a hand-off between threads
    /// takes microseconds, a wait behind a slow holder takes seconds (the default boundaries assume milliseconds).
    /// </summary>
    public static readonly double[] WaitBuckets =
        [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

    /// <summary>Creates <see cref="WaitDuration"/> on <paramref name="meter"/>, in seconds, with <see cref="WaitBuckets"/>.</summary>
    public static Histogram<double> CreateWaitDuration(Meter meter, string description) => meter.CreateHistogram(
        WaitDuration, Seconds, description, tags: null, new InstrumentAdvice<double> { HistogramBucketBoundaries = WaitBuckets });

    /// <summary>Creates <see cref="Waiters"/> on <paramref name="meter"/>.</summary>
    public static UpDownCounter<long> CreateWaiters(Meter meter, string description) =>
        meter.CreateUpDownCounter<long>(Waiters, "{waiter}", description);

    /// <summary>The tags of a primitive, queue or server-side wait: its kind, and its name when it has one.</summary>
    public static TagList Tags(string kind, string? name)
    {
        var tags = new TagList { { KindTag, kind } };
        if (name is not null)
        {
            tags.Add(NameTag, name);
        }

        return tags;
    }

    /// <summary><see cref="Tags(string, string?)"/> and the wait's <paramref name="outcome"/>.</summary>
    public static TagList Tags(string kind, string? name, string outcome)
    {
        TagList tags = Tags(kind, name);
        tags.Add(OutcomeTag, outcome);
        return tags;
    }
}
