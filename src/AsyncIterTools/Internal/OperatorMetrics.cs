using System.Diagnostics.Metrics;

namespace AsyncIterTools.Internal;

/// <summary>
/// The "AsyncIterTools" meter and its instrument (names in <see cref="MetricNames"/>): the calls in flight of every
/// concurrent operator, counted up where a call starts and down where it completes, both in <see cref="CompletionQueue{TArg, TResult}"/>.
/// </summary>
/// <remarks>Nothing is recorded or allocated while nobody listens: a call is counted only when
/// <see cref="Instrument.Enabled"/> was true as it started.</remarks>
internal static class OperatorMetrics
{
    /// <summary>The meter's name, which an exporter subscribes to (<c>AddMeter("AsyncIterTools")</c>).</summary>
    public const string MeterName = "AsyncIterTools";

    private static readonly Meter s_meter = new(MeterName, typeof(OperatorMetrics).Assembly.GetName().Version?.ToString());

    /// <summary>Calls running now in Map, MapUnordered, GatherAsync, GatherSettledAsync, AsCompleted and Merge.</summary>
    public static readonly UpDownCounter<long> InFlight = s_meter.CreateUpDownCounter<long>(
        MetricNames.OperatorInFlight, "{call}", "Calls running now in a concurrent operator (selector calls, work items, source moves).");
}
