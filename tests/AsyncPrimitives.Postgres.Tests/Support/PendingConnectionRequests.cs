using System.Diagnostics.Metrics;
using System.Text.RegularExpressions;

namespace AsyncPrimitives.Postgres.Tests.Support;

/// <summary>
/// Counts the calls waiting for a connection of one data source's pool (Npgsql's <c>pending_requests</c> measurements),
/// so a test can tell when a call waits for a pooled connection without sleeping.
/// </summary>
public sealed class PendingConnectionRequests : IDisposable
{
    private readonly MeterListener _listener = new();
    private int _count;

    /// <param name="application">The application_name of the data source's connection string (the pool's name, the tag
    /// of its measurements, is that connection string): <see cref="Member.Application"/>.</param>
    public PendingConnectionRequests(string application)
    {
        var name = new Regex(Regex.Escape(application) + "(?![0-9])");
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "Npgsql" && instrument.Name.EndsWith("pending_requests", StringComparison.Ordinal))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<int>((_, value, tags, _) =>
        {
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                if (tag.Value is string s && name.IsMatch(s))
                {
                    Interlocked.Add(ref _count, value);
                    return;
                }
            }
        });
        _listener.Start();
    }

    /// <summary>The calls waiting for a pooled connection now.</summary>
    public int Count => Volatile.Read(ref _count);

    public void Dispose() => _listener.Dispose();
}
