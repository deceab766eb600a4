namespace AsyncIterTools.Tests;

/// <summary>
/// The contract Map and MapUnordered share (they differ only in the order of their results): arguments checked at the
/// call, values match Select, at most <c>maxConcurrency</c> calls in flight, back-pressure on the source, and the first
/// failure, an early break or cancellation cancels and awaits the calls in flight. One sealed subclass per operator.
/// </summary>
public abstract class MapContractTests
{
    private static readonly Func<int, CancellationToken, ValueTask<int>> s_double = (x, _) => new ValueTask<int>(x * 2);

    /// <summary>Gets a value indicating whether the operator yields results in source order.</summary>
    protected abstract bool Ordered { get; }

    /// <summary>Applies the operator under test.</summary>
    protected abstract IAsyncEnumerable<TResult> Apply<T, TResult>(IAsyncEnumerable<T> source, Func<T, CancellationToken, ValueTask<TResult>> selector, int maxConcurrency);

    private static async ValueTask<int> YieldThenDouble(int x, CancellationToken ct)
    {
        await Task.Yield();
        return x * 2;
    }

    /// <summary>The results are exactly <paramref name="expected"/>: in that order when <see cref="Ordered"/>.</summary>
    private void AssertResults(IEnumerable<int> actual, IEnumerable<int> expected)
    {
        if (Ordered)
        {
            actual.Should().Equal(expected);
        }
        else
        {
            actual.Should().BeEquivalentTo(expected);
        }
    }

    [Fact]
    public void InvalidArguments_ThrowAtTheCall()
    {
        FluentActions.Invoking(() => Apply((IAsyncEnumerable<int>)null!, s_double, 1)).Should().Throw<ArgumentNullException>().WithParameterName("source");
        FluentActions.Invoking(() => Apply<int, int>(Sources.Of(SourceMode.Synchronous, 1), null!, 1)).Should().Throw<ArgumentNullException>().WithParameterName("selector");
        FluentActions.Invoking(() => Apply(Sources.Of(SourceMode.Synchronous, 1), s_double, 0)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxConcurrency");
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Empty_GivesEmpty(SourceMode mode)
    {
        var source = Sources.Of<int>(mode);
        (await Apply(source, s_double, 3).ToListAsync()).Should().BeEmpty();
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Values_MatchSelect(SourceMode mode)
    {
        int[] items = Enumerable.Range(0, 50).ToArray();
        var source = Sources.From(items, mode);
        AssertResults(await Apply(source, YieldThenDouble, 4).ToListAsync().AsTask().WaitAsync(TestWork.Bound), items.Select(x => x * 2));
        (await Apply(Sources.From(items, mode), s_double, 1).ToListAsync()).Should().Equal(items.Select(x => x * 2), "one call at a time completes in source order");
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task SelectorThrowingSynchronously_IsAFailure_InFlightCallsAreCancelled()
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var source = Sources.From(Enumerable.Range(0, 10));
        Func<int, CancellationToken, ValueTask<int>> selector = (x, ct) => x == 2 ? throw new FormatException() : new ValueTask<int>(probe.RunAsync(x, never, ct));
        IAsyncEnumerable<int> mapped = Apply(source, selector, 4);

        await FluentActions.Awaiting(() => mapped.ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
        probe.Started.Should().BeGreaterThanOrEqualTo(2);
        probe.Cancelled.Should().Be(probe.Started, "every call started before the failure surfaced was cancelled");
        probe.InFlight.Should().Be(0);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task PeakConcurrency_ReachesButNeverExceedsMax(SourceMode mode)
    {
        var probe = new ConcurrencyProbe(max: 4);
        var source = Sources.From(Enumerable.Range(0, 40), mode);
        Task<List<int>> mapped = Apply(source, (x, ct) => new ValueTask<int>(probe.RunAsync(x, probe.Held, ct)), 4).ToListAsync().AsTask();
        await probe.AssertHeldAtMaxThenReleaseAsync();
        List<int> results = await mapped.WaitAsync(TestWork.Bound);
        AssertResults(results, Enumerable.Range(0, 40));
        probe.Peak.Should().Be(4);
        probe.StartOrder.Should().Equal(Enumerable.Range(0, 40));
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BackPressure_ConsumerStopsAfter10_SourceProducedAtMost14(SourceMode mode)
    {
        var source = Sources.From(Enumerable.Range(0, 1_000), mode); // Sources.Endless materializes int.MaxValue items (OOM)
        var taken = new List<int>();
        await foreach (int x in Apply(source, YieldThenDouble, 4))
        {
            taken.Add(x);
            if (taken.Count == 10)
            {
                break;
            }
        }

        taken.Should().OnlyHaveUniqueItems().And.HaveCount(10);
        if (Ordered)
        {
            taken.Should().Equal(Enumerable.Range(0, 10).Select(x => x * 2));
        }
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
        var map = Apply(source, async (x, ct) => x == 3 ? throw boom : await probe.RunAsync(x, never, ct), 4);

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

        await FluentActions.Awaiting(() => Apply(source, (x, ct) => new ValueTask<int>(probe.RunAsync(x, never, ct)), 4).ToListAsync().AsTask().WaitAsync(TestWork.Bound))
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
        await foreach (int x in Apply(source, (x, ct) => x == 0 ? new ValueTask<int>(x) : new ValueTask<int>(probe.RunAsync(x, never, ct)), 4))
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
        await using IAsyncEnumerator<int> e = Apply(source, (x, ct) => new ValueTask<int>(probe.RunAsync(x, never, ct)), 2).GetAsyncEnumerator(cts.Token);
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
}
