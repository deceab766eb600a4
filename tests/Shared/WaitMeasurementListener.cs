using System.Diagnostics.Metrics;

namespace AsyncTools.Testing;

/// <summary>A <see cref="MeterListener"/> on the wait measurements (<c>asynctools.wait.duration</c>,
/// <c>asynctools.waiters</c>) of one meter that are tagged with one name: measurements of other names pass unseen, so
/// tests running beside it are not disturbed.</summary>
internal static class WaitMeasurementListener
{
    /// <summary>Whether a measurement is a wait counted up as it queues.</summary>
    public static bool IsQueueing(string instrument, double value, string? outcome) => instrument == "asynctools.waiters" && value > 0;

    /// <summary>Starts a listener that calls <paramref name="measured"/> (instrument name, value, <c>asynctools.outcome</c>
    /// tag) for each such measurement, inside the call that records it; dispose it to stop.</summary>
    /// <param name="meter">The meter's name: <c>AsyncPrimitives</c> or <c>AsyncPrimitives.Postgres</c>.</param>
    /// <param name="name">The <c>asynctools.name</c> tag of the measurements to see.</param>
    /// <param name="measured">Called for each of them.</param>
    public static MeterListener Start(string meter, string name, Action<string, double, string?> measured)
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

            if (tagName == name)
            {
                measured(instrument.Name, value, outcome);
            }
        }

        listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Check(instrument, value, tags));
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Check(instrument, value, tags));
        listener.Start();
        return listener;
    }

    /// <summary>A faulty exporter: its callback throws <see cref="InvalidOperationException"/> for the measurements
    /// <paramref name="throwsFor"/> picks.</summary>
    public static MeterListener Throwing(string meter, string name, Func<string, double, string?, bool> throwsFor) =>
        Start(meter, name, (instrument, value, outcome) =>
        {
            if (throwsFor(instrument, value, outcome))
            {
                throw new InvalidOperationException("a faulty exporter");
            }
        });
}
