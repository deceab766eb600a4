namespace AsyncIterTools.Tests;

public sealed class MapTests
{
    private static readonly Func<int, CancellationToken, ValueTask<int>> s_double = (x, _) => new ValueTask<int>(x * 2);

    private static async ValueTask<int> YieldThenDouble(int x, CancellationToken ct)
    {
        await Task.Yield();
        return x * 2;
    }

    [Fact]
    public void InvalidArguments_ThrowAtTheCall()
    {
        FluentActions.Invoking(() => ((IAsyncEnumerable<int>)null!).Map(s_double, 1)).Should().Throw<ArgumentNullException>().WithParameterName("source");
        FluentActions.Invoking(() => Sources.Of(SourceMode.Synchronous, 1).Map((Func<int, CancellationToken, ValueTask<int>>)null!, 1)).Should().Throw<ArgumentNullException>().WithParameterName("selector");
        FluentActions.Invoking(() => Sources.Of(SourceMode.Synchronous, 1).Map(s_double, 0)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxConcurrency");
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Empty_GivesEmpty(SourceMode mode)
    {
        var source = Sources.Of<int>(mode);
        (await source.Map(s_double, 3).ToListAsync()).Should().BeEmpty();
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Values_MatchSelect_InSourceOrder(SourceMode mode)
    {
        int[] items = Enumerable.Range(0, 50).ToArray();
        var source = Sources.From(items, mode);
        (await source.Map(YieldThenDouble, 4).ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().Equal(items.Select(x => x * 2));
        (await Sources.From(items, mode).Map(s_double, 1).ToListAsync()).Should().Equal(items.Select(x => x * 2));
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task ReusedSlots_StartPendingAgain_ResultsStayInSourceOrder()
    {
        // With 2 slots, items 2 and 3 reuse the slots of items 0 and 1. A reused slot must not look finished.
        var gates = Enumerable.Range(0, 4).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        IAsyncEnumerator<int> e = Sources.From(Enumerable.Range(0, 4)).Map((x, _) => new ValueTask<int>(gates[x].Task), 2).GetAsyncEnumerator();
        ValueTask<bool> move = e.MoveNextAsync();
        gates[0].SetResult(0);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);
        move = e.MoveNextAsync();
        gates[1].SetResult(10);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(10);

        move = e.MoveNextAsync();
        move.IsCompleted.Should().BeFalse("item 2 (in item 0's old slot) is still running");
        gates[3].SetResult(30);
        gates[2].SetResult(20);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(20);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(30);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeFalse();
        await e.DisposeAsync().AsTask().WaitAsync(TestWork.Bound);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task SelectorThrowingSynchronously_IsAFailure_InFlightCallsAreCancelled(bool ordered)
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var source = Sources.From(Enumerable.Range(0, 10));
        Func<int, CancellationToken, ValueTask<int>> selector = (x, ct) => x == 2 ? throw new FormatException() : new ValueTask<int>(probe.RunAsync(x, never, ct));
        IAsyncEnumerable<int> mapped = ordered ? source.Map(selector, 4) : source.MapUnordered(selector, 4);

        await FluentActions.Awaiting(() => mapped.ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
        probe.Started.Should().BeGreaterThanOrEqualTo(2);
        probe.Cancelled.Should().Be(probe.Started, "every call started before the failure surfaced was cancelled");
        probe.InFlight.Should().Be(0);
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task OutOfOrderCompletions_AreYieldedInSourceOrder()
    {
        var gates = Enumerable.Range(0, 3).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var source = Sources.Of(SourceMode.Synchronous, 0, 1, 2);
        Task<List<int>> all = source.Map((x, _) => new ValueTask<int>(gates[x].Task), 3).ToListAsync().AsTask();
        gates[2].SetResult(20);
        gates[1].SetResult(10);
        gates[0].SetResult(0);
        (await all.WaitAsync(TestWork.Bound)).Should().Equal(0, 10, 20);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task PeakConcurrency_ReachesButNeverExceedsMax(SourceMode mode)
    {
        var probe = new ConcurrencyProbe(max: 4);
        var source = Sources.From(Enumerable.Range(0, 40), mode);
        Task<List<int>> mapped = source.Map((x, ct) => new ValueTask<int>(probe.RunAsync(x, probe.Held, ct)), 4).ToListAsync().AsTask();
        await probe.AssertHeldAtMaxThenReleaseAsync();
        List<int> results = await mapped.WaitAsync(TestWork.Bound);
        results.Should().Equal(Enumerable.Range(0, 40));
        probe.Peak.Should().Be(4);
        probe.StartOrder.Should().Equal(Enumerable.Range(0, 40));
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BackPressure_ConsumerStopsAfter10_SourceProducedAtMost14(SourceMode mode)
    {
        var source = Sources.From(Enumerable.Range(0, 1_000), mode); // Sources.Endless materializes int.MaxValue items (OOM)
        var taken = new List<int>();
        await foreach (int x in source.Map(YieldThenDouble, 4))
        {
            taken.Add(x);
            if (taken.Count == 10)
            {
                break;
            }
        }

        taken.Should().Equal(Enumerable.Range(0, 10).Select(x => x * 2));
        source.Produced.Should().BeLessThanOrEqualTo(14);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task SelectorFailure_CancelsAndAwaitsInFlightCalls_ThenSurfaces(SourceMode mode)
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var boom = new FormatException();
        var source = Sources.From(Enumerable.Range(0, 10), mode);
        var map = source.Map(async (x, ct) => x == 3 ? throw boom : await probe.RunAsync(x, never, ct), 4);

        (await FluentActions.Awaiting(() => map.ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>()).Which.Should().BeSameAs(boom);
        probe.Started.Should().Be(3);
        probe.Cancelled.Should().Be(3);
        probe.InFlight.Should().Be(0);
        source.Disposals.Should().Be(1);
        source.Produced.Should().Be(4);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task SourceFailure_CancelsAndAwaitsInFlightCalls_ThenSurfaces(SourceMode mode)
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var source = Sources.Failing(Enumerable.Range(0, 10), failAt: 2, mode);

        await FluentActions.Awaiting(() => source.Map((x, ct) => new ValueTask<int>(probe.RunAsync(x, never, ct)), 4).ToListAsync().AsTask().WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<InvalidOperationException>().WithMessage("source failure");
        probe.Cancelled.Should().Be(2);
        probe.InFlight.Should().Be(0);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task EarlyBreak_CancelsAndAwaitsInFlightCalls(SourceMode mode)
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var source = Sources.From(Enumerable.Range(0, 10), mode);
        await foreach (int x in source.Map((x, ct) => x == 0 ? new ValueTask<int>(x) : new ValueTask<int>(probe.RunAsync(x, never, ct)), 4))
        {
            x.Should().Be(0);
            break;
        }

        probe.InFlight.Should().Be(0);
        probe.Cancelled.Should().Be(probe.Started);
        probe.Started.Should().BeGreaterThan(0);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Cancellation_FlowsToSourceAndSelector(SourceMode mode)
    {
        var probe = new ConcurrencyProbe(max: 2);
        var never = new TaskCompletionSource<bool>().Task;
        using var cts = new CancellationTokenSource();
        var source = Sources.From(Enumerable.Range(0, 10), mode);
        await using IAsyncEnumerator<int> e = source.Map((x, ct) => new ValueTask<int>(probe.RunAsync(x, never, ct)), 2).GetAsyncEnumerator(cts.Token);
        ValueTask<bool> move = e.MoveNextAsync();
        await probe.ReachedMax.WaitAsync(TestWork.Bound);
        source.LastToken.CanBeCanceled.Should().BeTrue();
        cts.Cancel();

        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        probe.Cancelled.Should().Be(2);
        source.LastToken.IsCancellationRequested.Should().BeTrue();
        await e.DisposeAsync();
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task SlowHead_BoundsTheWindow_NoMoreThanMaxStartedAndNotYielded()
    {
        // Memory is O(maxConcurrency): results that finished behind a slow head count against the window until yielded.
        var head = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new List<int>();
        var source = Sources.From(Enumerable.Range(0, 10));
        await using IAsyncEnumerator<int> e = source.Map(
            (x, _) =>
            {
                started.Add(x);
                return x == 0 ? new ValueTask<int>(head.Task) : new ValueTask<int>(x);
            },
            3).GetAsyncEnumerator();

        ValueTask<bool> first = e.MoveNextAsync();
        first.IsCompleted.Should().BeFalse("the head is still running");
        started.Should().Equal(new[] { 0, 1, 2 }, "1 and 2 are done, but the window of 3 is full until 0 is yielded");
        source.Produced.Should().Be(3);

        head.SetResult(0);
        (await first.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);
        var rest = new List<int>();
        while (await e.MoveNextAsync())
        {
            rest.Add(e.Current);
        }

        rest.Should().Equal(Enumerable.Range(1, 9));
    }
}
