using AsyncPrimitives;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using DotNextManualResetEvent = DotNext.Threading.AsyncManualResetEvent;
using NitoManualResetEvent = Nito.AsyncEx.AsyncManualResetEvent;

namespace AsyncTools.Benchmarks;

/// <summary>
/// A resettable event, per cycle, on one thread. Signaled: set, wait (completes at once), reset. Waiting: queue a
/// waiter, set (which releases it), collect, reset. The BCL has no resettable async event: the baseline is a new
/// TaskCompletionSource per cycle, the usual stand-in. Peers: Nito.AsyncEx and DotNext AsyncManualResetEvent.
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class EventBenchmarks
{
    private readonly AsyncEvent _event = new();
    private readonly NitoManualResetEvent _nito = new();
    private readonly DotNextManualResetEvent _dotNext = new(initialState: false);
    private TaskCompletionSource _tcs = NewTcs();

    [Benchmark(Baseline = true), BenchmarkCategory("Signaled")]
    public async Task Signaled_TaskCompletionSource()
    {
        _tcs.SetResult();
        await _tcs.Task;
        _tcs = NewTcs();
    }

    [Benchmark, BenchmarkCategory("Signaled")]
    public async Task Signaled_AsyncEvent()
    {
        _event.Set();
        await _event.WaitAsync();
        _event.Clear();
    }

    [Benchmark, BenchmarkCategory("Signaled")]
    public async Task Signaled_Nito()
    {
        _nito.Set();
        await _nito.WaitAsync();
        _nito.Reset();
    }

    [Benchmark, BenchmarkCategory("Signaled")]
    public async Task Signaled_DotNext()
    {
        _dotNext.Set();
        await _dotNext.WaitAsync();
        _dotNext.Reset();
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Waiting")]
    public void Waiting_TaskCompletionSource()
    {
        Task wait = _tcs.Task;
        _tcs.SetResult();
        wait.GetAwaiter().GetResult();
        _tcs = NewTcs();
    }

    [Benchmark, BenchmarkCategory("Waiting")]
    public void Waiting_AsyncEvent()
    {
        ValueTask wait = _event.WaitAsync();
        _event.Set();
        ContendedCycleBenchmarks.Collect(wait);
        _event.Clear();
    }

    [Benchmark, BenchmarkCategory("Waiting")]
    public void Waiting_Nito()
    {
        Task wait = _nito.WaitAsync();
        _nito.Set();
        wait.GetAwaiter().GetResult();
        _nito.Reset();
    }

    [Benchmark, BenchmarkCategory("Waiting")]
    public void Waiting_DotNext()
    {
        ValueTask wait = _dotNext.WaitAsync();
        _dotNext.Set();
        ContendedCycleBenchmarks.Collect(wait);
        _dotNext.Reset();
    }

    private static TaskCompletionSource NewTcs() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
