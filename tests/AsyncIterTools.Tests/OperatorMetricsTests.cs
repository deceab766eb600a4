using System.Diagnostics.Metrics;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace AsyncIterTools.Tests;

/// <summary>
/// The "AsyncIterTools" meter (DESIGN.md, Metrics): <c>asynctools.operator.in_flight</c> counts the calls each
/// concurrent operator has running, tagged <c>asynctools.operator</c>; up as a call starts, down as it completes.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public sealed class OperatorMetricsTests : IDisposable
{
    private const int Calls = 3;

    private readonly MetricCollector<long> _inFlight = new(null, "AsyncIterTools", "asynctools.operator.in_flight");

    public static TheoryData<string> Operators => new() { "Map", "MapUnordered", "GatherAsync", "GatherSettledAsync", "AsCompleted", "Merge" };

    public void Dispose() => _inFlight.Dispose();

    [Fact]
    public void Instrument_IsAnUpDownCounterOfTheAsyncIterToolsMeter()
    {
        _inFlight.Instrument.Should().BeOfType<UpDownCounter<long>>();
        _inFlight.Instrument!.Meter.Name.Should().Be("AsyncIterTools");
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task RunningCalls_AreCountedWhileTheyRun_TaggedWithTheOperator(string op)
    {
        var gate = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var allStarted = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        int started = 0;
        async Task<int> Work(int item)
        {
            if (Interlocked.Increment(ref started) == Calls)
            {
                allStarted.SetResult(true);
            }

            await gate.Task;
            return item;
        }

        Task<int> run = RunAsync(op, Work);
        await allStarted.Task.WaitAsync(TestWork.Bound);

        InFlight(op).Should().Be(Calls);

        gate.SetResult(true);
        (await run.WaitAsync(TestWork.Bound)).Should().Be(Calls);
        InFlight(op).Should().Be(0);
        _inFlight.GetMeasurementSnapshot().Where(m => Equals(m.Tags["asynctools.operator"], op)).Should().OnlyContain(m =>
            m.Tags.Count == 1 && (m.Value == 1 || m.Value == -1), "the operator is the only tag, and each call moves the count by one");
    }

    [Fact]
    public async Task FailedCalls_AreCountedDownToo()
    {
        Func<Task> gather = () => AsyncIter.GatherAsync(
            Enumerable.Range(0, Calls).Select(i => (Func<CancellationToken, Task<int>>)(async ct =>
            {
                await Task.Yield();
                throw new InvalidOperationException("boom " + i);
            })));

        await gather.Should().ThrowAsync<InvalidOperationException>();

        InFlight("GatherAsync").Should().Be(0);
        _inFlight.GetMeasurementSnapshot().Should().NotBeEmpty();
    }

    private static async Task<int> RunAsync(string op, Func<int, Task<int>> work)
    {
        IEnumerable<int> items = Enumerable.Range(0, Calls);
        IEnumerable<Func<CancellationToken, Task<int>>> factories = items.Select(i => (Func<CancellationToken, Task<int>>)(_ => work(i)));
        switch (op)
        {
            case "Map":
                return await items.ToAsyncEnumerable().Map((i, _) => new ValueTask<int>(work(i)), Calls).CountAsync();
            case "MapUnordered":
                return await items.ToAsyncEnumerable().MapUnordered((i, _) => new ValueTask<int>(work(i)), Calls).CountAsync();
            case "GatherAsync":
                return (await AsyncIter.GatherAsync(factories)).Length;
            case "GatherSettledAsync":
                return (await AsyncIter.GatherSettledAsync(factories)).Length;
            case "AsCompleted":
                return await AsyncIter.AsCompleted(factories).CountAsync();
            case "Merge":
                return await AsyncIter.Merge(items.Select(i => Source(i, work)).ToArray()).CountAsync();
            default:
                throw new ArgumentOutOfRangeException(nameof(op), op, null);
        }
    }

    private static async IAsyncEnumerable<int> Source(int item, Func<int, Task<int>> work)
    {
        yield return await work(item);
    }

    /// <summary>A call whose lease came after another call failed never starts; it still completes (and is counted
    /// down), also when the consumer walks away without disposing the enumeration.</summary>
    [Fact]
    public async Task ACallHeldBackByAFailure_IsCountedDown_EvenInAnEnumerationNeverDisposed()
    {
        var failCall1 = new TaskCompletionSource(); // continuations inline
        var grantLease2 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var limiter = new CountingLimiter { Gate = (n, _) => n == 2 ? grantLease2.Task : Task.CompletedTask };
        async Task<int> Work(int i, CancellationToken ct)
        {
            if (i == 1)
            {
                await failCall1.Task.ConfigureAwait(false);
                throw new InvalidDataException("call 1");
            }

            return i;
        }

        IAsyncEnumerator<int> e = Sources.From(Enumerable.Range(0, 3))
            .MapUnordered((i, ct) => new ValueTask<int>(Work(i, ct)), 3, limiter).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        TestWork.CompleteInline(failCall1.SetResult);
        grantLease2.SetResult();
        SpinWait.SpinUntil(() => limiter.Granted == 3 && limiter.Held == 0, TestWork.Bound).Should().BeTrue();

        // The consumer walks away: every call has ended, none holds a lease.
        SpinWait.SpinUntil(() => InFlight("MapUnordered") == 0, TestWork.Bound).Should().BeTrue($"no call is running (in flight: {InFlight("MapUnordered")})");
        GC.KeepAlive(e);
    }

    private long InFlight(string op) =>
        _inFlight.GetMeasurementSnapshot().Where(m => Equals(m.Tags["asynctools.operator"], op)).Sum(m => m.Value);

    private static readonly AsyncLocal<bool> s_throwHere = new();

    [Fact]
    public async Task AListenerThatThrowsAsACallStarts_FailsTheOperator_WhichDoesNotWaitForACallItNeverStarted()
    {
        using (var listener = new MeterListener())
        {
            listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == "AsyncIterTools" && instrument.Name == "asynctools.operator.in_flight")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            };
            listener.SetMeasurementEventCallback<long>((_, value, _, _) =>
            {
                if (s_throwHere.Value && value == 1)
                {
                    throw new InvalidOperationException("a faulty exporter");
                }
            });
            listener.Start();

            s_throwHere.Value = true; // only this test's flow: the operator starts its calls on it
            Task<int[]> gathering = AsyncIter.GatherAsync(new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(1) });
            s_throwHere.Value = false;

            await FluentActions.Awaiting(() => gathering.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>()
                .WithMessage("a faulty exporter");
        }
    }

    /// <summary>
    /// A throwing listener never strands the operator, and nothing is left running when it throws: the call already
    /// running when a later start's count throws is cancelled and awaited first (docs/asynciter.md, "Nothing is left
    /// running").
    /// </summary>
    [Fact]
    public async Task AListenerThatThrowsAsALaterCallStarts_FailsTheGathering_OnlyOnceTheRunningCallIsCancelledAndHasEnded()
    {
        var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var end = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        int starts = 0;
        using (var listener = new MeterListener())
        {
            listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == "AsyncIterTools" && instrument.Name == "asynctools.operator.in_flight")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            };
            listener.SetMeasurementEventCallback<long>((_, value, _, _) =>
            {
                if (s_throwHere.Value && value == 1 && Interlocked.Increment(ref starts) == 2)
                {
                    throw new InvalidOperationException("a faulty exporter");
                }
            });
            listener.Start();

            var work = new Func<CancellationToken, Task<int>>[]
            {
                ct =>
                {
                    // Watches its token, then ends only when the test lets it.
                    _ = ct.Register(() => cancelled.TrySetResult());
                    return end.Task;
                },
                _ => Task.FromResult(2),
            };
            s_throwHere.Value = true; // only this test's flow: the operator starts its calls on it
            Task<int[]> gathering = AsyncIter.GatherAsync(work);
            s_throwHere.Value = false;

            await cancelled.Task.WaitAsync(TestWork.Bound);
            gathering.IsCompleted.Should().BeFalse("the running call has not ended yet");
            end.SetResult(1);
            await FluentActions.Awaiting(() => gathering.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>()
                .WithMessage("a faulty exporter");
        }
    }

    /// <summary>
    /// docs/observability.md: whether a call is counted is decided as it starts, by whether anyone listens then. A call
    /// started while nobody listened is not counted down when it completes, not even by a listener started meanwhile,
    /// also when its bookkeeping was used before by a call that was counted.
    /// </summary>
    [Fact]
    public async Task ACallStartedWhileNobodyListened_IsNotCountedDown_ByAListenerStartedBeforeItCompletes()
    {
        _inFlight.Dispose(); // this test needs a moment when nobody listens
        static MeterListener Listen(Action<long> measured)
        {
            var listener = new MeterListener
            {
                InstrumentPublished = (instrument, l) =>
                {
                    if (instrument.Meter.Name == "AsyncIterTools" && instrument.Name == "asynctools.operator.in_flight")
                    {
                        l.EnableMeasurementEvents(instrument);
                    }
                },
            };
            listener.SetMeasurementEventCallback<long>((_, value, _, _) => measured(value));
            listener.Start();
            return listener;
        }

        var source = new TestWork.GatedMoveSource(ready: 1); // item 0 at once; the move to item 1 waits
        var call1 = new TaskCompletionSource<int>(); // continuations inline
        Func<int, CancellationToken, ValueTask<int>> selector = (x, _) => x == 0 ? new ValueTask<int>(0) : new ValueTask<int>(call1.Task);
        await using IAsyncEnumerator<int> e = source.Map(selector, 1).GetAsyncEnumerator();

        using (Listen(_ => { }))
        {
            // Call 0 starts and completes, counted up and down.
            (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
            e.Current.Should().Be(0);
        }

        TestWork.CompleteInline(source.ReleaseMove); // item 1 is read, as nobody listens
        ValueTask<bool> move = e.MoveNextAsync(); // call 1 starts, uncounted, and waits
        move.IsCompleted.Should().BeFalse("call 1 is running");

        long countedHere = 0;
        using (Listen(value =>
        {
            if (s_throwHere.Value)
            {
                countedHere += value;
            }
        }))
        {
            s_throwHere.Value = true; // only this test's flow: call 1 completes inline, on it
            TestWork.CompleteInline(() => call1.SetResult(1));
            s_throwHere.Value = false;
            (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
            e.Current.Should().Be(1);
        }

        countedHere.Should().Be(0, "call 1 started while nobody listened: it is counted neither up nor down");
    }

    [Theory]
    [InlineData("GatherAsync")]
    [InlineData("Map")]
    public async Task AListenerThatThrowsAsACallCompletedAtOnceIsCountedDown_FailsTheOperator_WhichDoesNotWaitForever(string op)
    {
        using (var listener = new MeterListener())
        {
            listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == "AsyncIterTools" && instrument.Name == "asynctools.operator.in_flight")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            };
            listener.SetMeasurementEventCallback<long>((_, value, _, _) =>
            {
                if (s_throwHere.Value && value == -1)
                {
                    throw new InvalidOperationException("a faulty exporter");
                }
            });
            listener.Start();

            s_throwHere.Value = true; // only this test's flow: the call completes inline, on it
            Task run = op == "GatherAsync"
                ? AsyncIter.GatherAsync(new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(1) })
                : AsyncEnumerable.Range(0, 1).Map((x, _) => new ValueTask<int>(x), 1).ToArrayAsync().AsTask();
            s_throwHere.Value = false;

            await FluentActions.Awaiting(() => run.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>()
                .WithMessage("a faulty exporter");
        }
    }
}
