using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using OpenTelemetry;
using OpenTelemetry.Metrics;

namespace AsyncPrimitives.Tests;

/// <summary>The examples of docs/observability.md, run: exporting through OpenTelemetry, and listening without it.</summary>
[Collection(ProcessWideCollection.Name)]
public sealed class ObservabilityDocExamplesTests
{
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task OpenTelemetry_ExportsTheWaitDurationOfANamedSemaphore()
    {
        var exported = new List<Metric>();

        // doc: observability-opentelemetry
        using MeterProvider meters = Sdk.CreateMeterProviderBuilder()
            .AddMeter("AsyncPrimitives", "AsyncIterTools", "AsyncPrimitives.Postgres")
            .AddInMemoryExporter(exported) // a service adds its exporter here: OTLP, Prometheus, ...
            .Build();

        var partnerApi = new AsyncSemaphore(initialCount: 64) { Name = "partner-api" };
        // end doc

        await ContendOnceAsync(partnerApi);
        meters.ForceFlush();

        Metric duration = exported.Should().ContainSingle(m => m.Name == "asynctools.wait.duration").Subject;
        duration.Unit.Should().Be("s");
        duration.MetricType.Should().Be(MetricType.Histogram);
        var points = new List<MetricPoint>();
        foreach (ref readonly MetricPoint point in duration.GetMetricPoints())
        {
            points.Add(point);
        }

        MetricPoint wait = points.Should().ContainSingle(p => HasTag(p, "asynctools.name", "partner-api")).Subject;
        wait.GetHistogramCount().Should().Be(1);
        HasTag(wait, "asynctools.kind", "AsyncSemaphore").Should().BeTrue();
        HasTag(wait, "asynctools.outcome", "acquired").Should().BeTrue();
    }

    [Fact]
    public async Task MeterListener_SeesHowLongCallersWaitForThePartnerApi()
    {
        var partnerApi = new AsyncSemaphore(initialCount: 64) { Name = "partner-api" };

        // doc: observability-meterlistener
        var waits = new ConcurrentQueue<(double Seconds, string? Outcome)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "AsyncPrimitives" && instrument.Name == "asynctools.wait.duration")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<double>((instrument, seconds, tags, state) =>
        {
            string? name = null, outcome = null;
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                if (tag.Key == "asynctools.name") name = tag.Value as string;
                if (tag.Key == "asynctools.outcome") outcome = tag.Value as string;
            }

            if (name == "partner-api")
            {
                waits.Enqueue((seconds, outcome));
            }
        });
        listener.Start();
        // end doc

        await ContendOnceAsync(partnerApi);

        waits.Should().ContainSingle().Which.Outcome.Should().Be("acquired");
    }

    /// <summary>Takes every permit, queues one wait, frees a permit for it.</summary>
    private static async Task ContendOnceAsync(AsyncSemaphore semaphore)
    {
        var held = new List<AsyncSemaphore.Releaser>();
        while (semaphore.TryAcquire())
        {
            held.Add(default);
        }

        Task<AsyncSemaphore.Releaser> waiting = semaphore.AcquireAsync().AsTask();
        semaphore.Release();
        (await waiting.WaitAsync(s_bound)).Dispose();
        semaphore.Release(held.Count - 1);
    }

    private static bool HasTag(MetricPoint point, string key, string value)
    {
        foreach (KeyValuePair<string, object?> tag in point.Tags)
        {
            if (tag.Key == key && Equals(tag.Value, value))
            {
                return true;
            }
        }

        return false;
    }
}
