using System.Diagnostics.Metrics;

namespace AsyncTools.Testing;

/// <summary>A faulty exporter: a <see cref="MeterListener"/> whose callback throws <see cref="InvalidOperationException"/>
/// for the wait measurements (<c>asynctools.wait.duration</c>, <c>asynctools.waiters</c>) of one meter that are tagged
/// with one name and that a predicate picks. Measurements of other names pass, so tests running beside it are not
/// disturbed.</summary>
internal static class ThrowingMeterListener
{
    /// <summary>Whether a measurement is a wait counted up as it queues.</summary>
    public static bool IsQueueing(string instrument, double value, string? outcome) => instrument == "asynctools.waiters" && value > 0;

    /// <summary>Starts the listener; dispose it to stop.</summary>
    /// <param name="meter">The meter's name: <c>AsyncPrimitives</c> or <c>AsyncPrimitives.Postgres</c>.</param>
    /// <param name="name">The <c>asynctools.name</c> tag whose measurements may throw.</param>
    /// <param name="throwsFor">Picks the measurements that throw: instrument name, value, <c>asynctools.outcome</c> tag.</param>
    public static MeterListener Start(string meter, string name, Func<string, double, string?, bool> throwsFor)
    {
        var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == meter && instrument.Name is "asynctools.wait.duration" or "asynctools.waiters")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        void Check(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            string? tagName = null, outcome = null;
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                tagName = tag.Key == "asynctools.name" ? tag.Value as string : tagName;
                outcome = tag.Key == "asynctools.outcome" ? tag.Value as string : outcome;
            }

            if (tagName == name && throwsFor(instrument.Name, value, outcome))
            {
                throw new InvalidOperationException("a faulty exporter");
            }
        }

        listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Check(instrument, value, tags));
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Check(instrument, value, tags));
        listener.Start();
        return listener;
    }
}
