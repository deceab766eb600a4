using System.Diagnostics.Metrics;
using AsyncPrimitives;
using BenchmarkDotNet.Attributes;

namespace AsyncTools.Benchmarks;

/// <summary>
/// What the metrics cost a lock, with nobody listening (the baseline) and with a listener that takes every measurement
/// of the "AsyncPrimitives" meter (what an exporter does; its callback here does nothing, so this is our side alone).
/// Uncontended: an acquire + release pair, which never reaches the engine, so listening must change nothing. Contended:
/// one wait queued behind the held lock, released and collected on one thread (as <see cref="ContendedCycleBenchmarks"/>),
/// the path on which a listened wait is measured and counted.
/// </summary>
public class MetricsCostBenchmarks
{
    private readonly AsyncLock _free = new() { Name = "free" };
    private readonly AsyncLock _held = new() { Name = "held" };
    private MeterListener? _listener;

    /// <summary>Whether a listener takes the meter's measurements.</summary>
    [Params(false, true)]
    public bool Listening { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _held.TryAcquire(out _);
        if (!Listening)
        {
            return;
        }

        _listener = new MeterListener
        {
            InstrumentPublished = static (instrument, listener) =>
            {
                if (instrument.Meter.Name == "AsyncPrimitives")
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            },
        };
        _listener.SetMeasurementEventCallback<double>(static (_, _, _, _) => { });
        _listener.SetMeasurementEventCallback<long>(static (_, _, _, _) => { });
        _listener.Start();
    }

    [GlobalCleanup]
    public void Cleanup() => _listener?.Dispose();

    [Benchmark]
    public async Task Uncontended_AcquireAsync_Release()
    {
        using (await _free.AcquireAsync())
        {
        }
    }

    [Benchmark]
    public AsyncLock.Releaser Contended_QueueReleaseCollect()
    {
        ValueTask<AsyncLock.Releaser> wait = _held.AcquireAsync();
        _held.Release();
        return ContendedCycleBenchmarks.Collect(wait);
    }
}
