using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

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
    public async Task SelectorThrowingSynchronously_IsAFailure_NothingStartsAfterIt_InFlightCallsAreCancelled()
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var source = Sources.From(Enumerable.Range(0, 10));
        Func<int, CancellationToken, ValueTask<int>> selector = (x, ct) => x == 2 ? throw new FormatException() : new ValueTask<int>(probe.RunAsync(x, never, ct));
        IAsyncEnumerable<int> mapped = Apply(source, selector, 4);

        await FluentActions.Awaiting(() => mapped.ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
        probe.Started.Should().Be(2, "the calls before the one that failed started, and none after it");
        probe.Cancelled.Should().Be(2, "every call started before the failure surfaced was cancelled");
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

    [Theory]
    [InlineData(SourceMode.Synchronous, 1)]
    [InlineData(SourceMode.Synchronous, 4)]
    [InlineData(SourceMode.Yielding, 1)]
    [InlineData(SourceMode.Yielding, 4)]
    public async Task SourceFailure_AfterCallsThatCompleted_YieldsTheirResultsFirst(SourceMode mode, int maxConcurrency)
    {
        var source = Sources.Failing(Enumerable.Range(0, 10), failAt: 2, mode);
        var seen = new List<int>();
        Func<Task> read = async () =>
        {
            await foreach (int x in Apply(source, s_double, maxConcurrency))
            {
                seen.Add(x);
            }
        };

        await read.Should().ThrowAsync<InvalidOperationException>().WithMessage("source failure");
        AssertResults(seen, [0, 2]);
        source.Disposals.Should().Be(1);
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
    public async Task SelectorFailure_AndTheSourcesDisposalFailingAfterIt_TheSelectorsFailureSurfaces(SourceMode mode)
    {
        var boom = new FormatException();
        var source = new TrackingSource<int>(Enumerable.Range(0, 10), mode) { DisposeFailure = new InvalidOperationException("dispose failed") };
        var map = Apply(source, (x, _) => x == 3 ? throw boom : new ValueTask<int>(x), 2);

        (await FluentActions.Awaiting(() => map.ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>())
            .Which.Should().BeSameAs(boom, "the first failure surfaces; the source's disposal failed after it");
        source.Disposals.Should().Be(1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task SourcesDisposalFailing_WithNoOtherFailure_Surfaces(bool earlyBreak)
    {
        var source = new TrackingSource<int>(Enumerable.Range(0, 10)) { DisposeFailure = new InvalidOperationException("dispose failed") };
        await FluentActions.Awaiting(() => Sources.ReadAsync(Apply(source, s_double, 2), earlyBreak))
            .Should().ThrowAsync<InvalidOperationException>().WithMessage("dispose failed");
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task SourcesNextItemArrivingBeforeAFailureIsTaken_IsNotStarted()
    {
        // While the consumer holds item 0: the source's move for item 2 completes, then item 1's call fails. The next
        // MoveNextAsync takes the move first, then the failure: no selector call may start in between.
        var source = new TestWork.GatedMoveSource(ready: 2);
        var failing = new TaskCompletionSource<int>(); // continuations inline
        bool failed = false;
        int startedAfterFailure = 0;
        Func<int, CancellationToken, ValueTask<int>> selector = (x, _) =>
        {
            startedAfterFailure += failed ? 1 : 0;
            return x == 1 ? new ValueTask<int>(failing.Task) : new ValueTask<int>(x);
        };
        await using IAsyncEnumerator<int> e = Apply(source, selector, 2).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);

        TestWork.CompleteInline(source.ReleaseMove);
        TestWork.CompleteInline(() => failing.SetException(new FormatException()));
        failed = true;

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
        startedAfterFailure.Should().Be(0, "nothing starts while a failure waits to be taken");
    }

    [Fact]
    public async Task TokenCancelledWhileWaiting_ACallThatIgnoresItsTokenCompletesAfterwards_NothingIsYielded()
    {
        var gate = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Func<int, CancellationToken, ValueTask<int>> ignoresItsToken = async (_, _) =>
        {
            started.TrySetResult();
            return await gate.Task;
        };
        using var cancel = new CancellationTokenSource();
        await using IAsyncEnumerator<int> e = Apply(Sources.Of(SourceMode.Synchronous, 1), ignoresItsToken, 4).GetAsyncEnumerator(cancel.Token);
        ValueTask<bool> move = e.MoveNextAsync();
        await started.Task.WaitAsync(TestWork.Bound);

        cancel.Cancel();
        gate.SetResult(42);

        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task EarlyBreak_CancelsAndAwaitsInFlightCalls(SourceMode mode)
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var source = Sources.From(Enumerable.Range(0, 10), mode);

        // Call 0 finishes once another call is running, so the break finds calls in flight whatever the source's timing
        // (a result that is ready is yielded without waiting for the source).
        var anotherStarted = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        Func<int, CancellationToken, ValueTask<int>> selector = (x, ct) =>
        {
            if (x == 0)
            {
                return new ValueTask<int>(anotherStarted.Task);
            }

            Task<int> running = probe.RunAsync(x, never, ct);
            anotherStarted.TrySetResult(0);
            return new ValueTask<int>(running);
        };

        await foreach (int x in Apply(source, selector, 4))
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

    /// <summary>
    /// A source that yields 0 and 1 at once, then waits for <paramref name="gate"/> (with its token, unless
    /// <paramref name="ignoreToken"/>) before yielding 2. <paramref name="log"/> records how it ended.
    /// </summary>
    private static async IAsyncEnumerable<int> StallsAfterTwo(
        Task gate, ConcurrentQueue<string> log, bool ignoreToken = false, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        try
        {
            yield return 0;
            yield return 1;
            try
            {
                await (ignoreToken ? gate : gate.WaitAsync(cancellationToken));
            }
            catch (OperationCanceledException)
            {
                log.Enqueue("cancelled");
                throw;
            }

            log.Enqueue("moved");
            yield return 2;
        }
        finally
        {
            log.Enqueue("disposed");
        }
    }

    [Fact]
    public async Task AResultThatIsReady_IsYielded_WhileTheSourceWaitsForItsNextElement()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var calls = new[] { new TaskCompletionSource<int>(), new TaskCompletionSource<int>(), new TaskCompletionSource<int>() };
        var log = new ConcurrentQueue<string>();
        await using IAsyncEnumerator<int> e = Apply(StallsAfterTwo(gate.Task, log), (x, _) => new ValueTask<int>(calls[x].Task), 4).GetAsyncEnumerator();

        ValueTask<bool> first = e.MoveNextAsync();
        calls[0].SetResult(10);
        (await first.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue("call 0 is done: it does not wait for the source's element 2");
        e.Current.Should().Be(10);

        ValueTask<bool> second = e.MoveNextAsync();
        calls[1].SetResult(11);
        (await second.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(11);
        log.Should().BeEmpty("the source is still waiting");

        ValueTask<bool> third = e.MoveNextAsync();
        gate.SetResult();
        calls[2].SetResult(12);
        (await third.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(12);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeFalse();
        log.Should().Equal("moved", "disposed");
    }

    [Fact]
    public async Task AFailureThatIsReady_Surfaces_WhileTheSourceWaitsForItsNextElement_AndTheSourceIsCancelledThenDisposed()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var boom = new FormatException();
        var log = new ConcurrentQueue<string>();
        var failing = new TaskCompletionSource<int>();
        var secondStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        IAsyncEnumerable<int> mapped = Apply(StallsAfterTwo(gate.Task, log), (x, ct) =>
        {
            if (x == 0)
            {
                return new ValueTask<int>(failing.Task);
            }

            secondStarted.SetResult();
            return new ValueTask<int>(probe.RunAsync(x, never, ct));
        }, 4);

        Task<List<int>> all = mapped.ToListAsync().AsTask();
        await secondStarted.Task.WaitAsync(TestWork.Bound);
        failing.SetException(boom);

        (await FluentActions.Awaiting(() => all.WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>()).Which.Should().BeSameAs(boom);
        log.Should().Equal("cancelled", "disposed");
        probe.Cancelled.Should().Be(1);
        probe.InFlight.Should().Be(0);
    }

    [Fact]
    public async Task EarlyBreak_WhileTheSourceWaitsForItsNextElement_DisposesTheSourceOnlyAfterThatMoveEnds()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var log = new ConcurrentQueue<string>();
        IAsyncEnumerator<int> e = Apply(StallsAfterTwo(gate.Task, log, ignoreToken: true), (x, _) => new ValueTask<int>(x), 4).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();

        // Both results were yielded while the source waits (ignoring its token): stopping now must wait for that move.
        Task disposing = e.DisposeAsync().AsTask();
        disposing.IsCompleted.Should().BeFalse("an enumerator is never disposed while its MoveNextAsync is pending");
        log.Should().BeEmpty();

        gate.SetResult();
        await disposing.WaitAsync(TestWork.Bound);
        log.Should().Equal("moved", "disposed");
    }

    [Fact]
    public async Task RacingSourceMovesAndCompletions_EveryElementIsMappedExactlyOnce_InOrderWhenOrdered()
    {
        var random = new Random(20261203);
        for (int round = 0; round < 200; round++)
        {
            int count = random.Next(0, 40);
            int seed = random.Next();
            int limit = random.Next(1, 6);
            var probe = new ConcurrencyProbe();
            var disposals = new StrongBox<int>();
            var source = RandomlyYielding(count, new Random(seed), disposals);
            var selectorRandom = new Random(seed + 1);
            int[] yields = Enumerable.Range(0, count).Select(_ => selectorRandom.Next(0, 3)).ToArray();

            List<int> results = await Apply(source, async (x, ct) => 2 * await probe.YieldingAsync(x, yields[x], ct), limit)
                .ToListAsync().AsTask().WaitAsync(TestWork.Bound);

            AssertResults(results, Enumerable.Range(0, count).Select(x => x * 2));
            probe.Peak.Should().BeLessThanOrEqualTo(limit, "round {0} (seed {1})", round, seed);
            probe.InFlight.Should().Be(0);
            disposals.Value.Should().Be(1);
        }
    }

    [Fact]
    public async Task RacingCancellationAndEarlyBreak_WithPendingSourceMoves_LeaveNothingRunning_AndDisposeTheSourceOnce()
    {
        var random = new Random(20261204);
        for (int round = 0; round < 200; round++)
        {
            int seed = random.Next();
            var rng = new Random(seed);
            int count = rng.Next(1, 40);
            int limit = rng.Next(1, 6);
            int breakAfter = rng.Next(0, count + 1);
            int cancelAfter = rng.Next(0, count + 1);
            var probe = new ConcurrencyProbe();
            var disposals = new StrongBox<int>();
            using var cts = new CancellationTokenSource();
            int[] yields = Enumerable.Range(0, count).Select(_ => rng.Next(0, 3)).ToArray();
            var results = new List<int>();

            Func<Task> run = async () =>
            {
                IAsyncEnumerable<int> source = RandomlyYielding(count, new Random(seed + 1), disposals);
                await foreach (int x in Apply(source, (x, ct) => new ValueTask<int>(probe.YieldingAsync(x, yields[x], ct)), limit).WithCancellation(cts.Token))
                {
                    results.Add(x);
                    if (results.Count == cancelAfter)
                    {
                        // Cancelled from another thread, racing the completions and the source's pending move.
                        _ = Task.Run(cts.Cancel);
                    }

                    if (results.Count == breakAfter)
                    {
                        break;
                    }
                }
            };

            Exception? error = await Record.ExceptionAsync(() => run().WaitAsync(TestWork.Bound));
            if (error is not null)
            {
                error.Should().BeAssignableTo<OperationCanceledException>("round {0} (seed {1}): only the cancellation may end the run early", round, seed);
            }

            probe.InFlight.Should().Be(0, "round {0} (seed {1}): nothing is left running", round, seed);
            disposals.Value.Should().Be(1, "round {0} (seed {1}): the source is disposed exactly once", round, seed);
            results.Should().OnlyHaveUniqueItems().And.OnlyContain(x => x >= 0 && x < count);
            if (Ordered)
            {
                results.Should().Equal(Enumerable.Range(0, results.Count), "round {0} (seed {1})", round, seed);
            }
        }
    }

    private static async IAsyncEnumerable<int> RandomlyYielding(
        int count, Random random, StrongBox<int> disposals, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        try
        {
            for (int i = 0; i < count; i++)
            {
                if (random.Next(2) == 0)
                {
                    await Task.Yield();
                }

                cancellationToken.ThrowIfCancellationRequested();
                yield return i;
            }
        }
        finally
        {
            Interlocked.Increment(ref disposals.Value);
        }
    }

    [Theory]
    [InlineData(Hostility.CurrentThrows)]
    [InlineData(Hostility.MoveNextThrowsSynchronously)]
    public async Task ACallThatCompletedBeforeTheSourceFails_IsYieldedFirst_AlsoWhenItsCurrentThrows(Hostility hostility)
    {
        var source = new HostileSource(hostility, new FormatException("the source failed"), at: 1, items: 3);

        List<int> seen = await OperatorChecks.CollectExpectingFailureAsync<int, FormatException>(Apply(source, (int x, CancellationToken _) => new ValueTask<int>(x), 2));

        source.Disposals.Should().Be(1);
        seen.Should().Equal([0], "item 0's call completed before the source failed: the failure takes its place in the completion order");
    }
}
