using System.Collections.Concurrent;
using System.Threading.RateLimiting;
using System.Runtime.CompilerServices;

namespace AsyncIterTools.Tests;

/// <summary>
/// The concurrent operators honour the caller's token themselves: once it is cancelled, no further item is yielded and
/// enumeration ends with <see cref="OperationCanceledException"/>, even when the source and the work ignore the token.
/// </summary>
public sealed class CancellationContractTests
{
    public static TheoryData<string> Operators => new() { "Merge", "MergeLimited", "Map", "MapUnordered", "Prefetch", "BatchTimed", "Tee", "AsCompletedWork", "AsCompletedTasks" };

    [Theory, MemberData(nameof(Operators))]
    public async Task CancelledMidway_YieldsNothingMore_ThenThrows_EvenWhenTheSourceIgnoresTheToken(string op)
    {
        IAsyncEnumerable<int> sequence = Build(op);
        await OperatorChecks.CancelAfterAsync(sequence, after: 2).WaitAsync(TestWork.Bound);
    }

    public static TheoryData<string> SourceOperators => new() { "Merge", "Map", "MapUnordered", "Prefetch", "BatchTimed" };

    /// <summary>The operators <see cref="Over"/> builds.</summary>
    public static TheoryData<string> OverOperators => new() { "Map", "MapUnordered", "Merge", "MergeLimited", "Prefetch", "BatchTimed" };

    [Theory, MemberData(nameof(SourceOperators))]
    public async Task ASourceFailingBecauseOfTheCancellation_EndsAsTheCancellation(string op)
    {
        using var cts = new CancellationTokenSource();
        var stalled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        IAsyncEnumerable<int> source = FailsWhenCancelled(stalled);
        IAsyncEnumerable<int> sequence = op switch
        {
            "Merge" => AsyncIter.Merge(source),
            "Map" => source.Map((x, _) => new ValueTask<int>(x), 2),
            "MapUnordered" => source.MapUnordered((x, _) => new ValueTask<int>(x), 2),
            "Prefetch" => source.Prefetch(2),
            _ => source.Batch(2, TimeSpan.FromHours(1)).Select(b => b[0]),
        };
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        Task<bool> move = e.MoveNextAsync().AsTask();
        await stalled.Task.WaitAsync(TestWork.Bound); // the source's move is pending, watching its token

        cts.Cancel(); // the source fails with an IOException inside the cancellation

        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task Merge_ASourceFailureTakenAfterTheCancellation_EndsAsTheCancellation()
    {
        using var cts = new CancellationTokenSource();
        var a = new TestWork.GatedMoveSource(ready: 1);
        var b = new TestWork.GatedMoveSource(ready: 0);
        await using IAsyncEnumerator<int> e = AsyncIter.Merge(a, b).GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue(); // a's first item
        TestWork.CompleteInline(() => b.FailMove(new InvalidDataException("b's own failure"))); // queued, not yet taken

        cts.Cancel();

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>(
            "once the token is cancelled the enumeration ends with the cancellation, as Map's does");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Map_ASourceMoveThatBlocksAndFailsOnceCancelled_EndsAsTheCancellation(bool ordered)
    {
        using var cts = new CancellationTokenSource();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var source = new BlockingAbortedSource(entered);
        IAsyncEnumerable<int> sequence = ordered
            ? source.Map((x, _) => new ValueTask<int>(x), 2)
            : source.MapUnordered((x, _) => new ValueTask<int>(x), 2);
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);

        Task<bool> move = Task.Run(() => e.MoveNextAsync().AsTask());
        await entered.Task.WaitAsync(TestWork.Bound); // past Map's own check; the source's read blocks

        cts.Cancel(); // the read is aborted and its move completes faulted at once

        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    [Theory]
    [InlineData("Merge")]
    [InlineData("Map")]
    [InlineData("Prefetch")]
    [InlineData("BatchTimed")]
    public async Task ASourceThatEndsOnceCancelledAndFailsToDispose_EndsAsTheCancellation(string op)
    {
        using var cts = new CancellationTokenSource();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var source = new EndsOnCancelDisposeFails(entered);
        IAsyncEnumerable<int> sequence = op switch
        {
            "Merge" => AsyncIter.Merge(source),
            "Map" => source.Map((x, _) => new ValueTask<int>(x), 2),
            "Prefetch" => source.Prefetch(2),
            _ => source.Batch(2, TimeSpan.FromHours(1), new FakeTimeProvider()).Select(b => b[0]),
        };
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        Task<bool> move = e.MoveNextAsync().AsTask();
        await entered.Task.WaitAsync(TestWork.Bound);

        cts.Cancel();

        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        source.Disposals.Should().Be(1);
    }

    /// <summary>The token rule once items were yielded: cancelled while the consumer waits for the next item, an
    /// enumeration whose source then ends (ignoring its token) ends as the cancellation, not as the end.</summary>
    [Theory]
    [InlineData("Merge")]
    [InlineData("MergeLimited")]
    public async Task CancelledWhileWaitingAfterAnItem_ASourceThatThenEnds_EndsAsTheCancellation(string op)
    {
        using var cts = new CancellationTokenSource();
        var end = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        static async IAsyncEnumerable<int> OneThenEndsWhenLetGo(Task end, TaskCompletionSource waiting)
        {
            yield return 1;
            waiting.TrySetResult();
            await end; // ignores its token
        }

        IAsyncEnumerable<int> source = OneThenEndsWhenLetGo(end.Task, waiting);
        IAsyncEnumerable<int> sequence = op == "Merge" ? AsyncIter.Merge(source) : AsyncIter.Merge(new[] { source }.AsEnumerable(), 1);
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        Task<bool> move = e.MoveNextAsync().AsTask();
        await waiting.Task.WaitAsync(TestWork.Bound);

        cts.Cancel();
        end.SetResult();

        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    [Theory, MemberData(nameof(SourceOperators))]
    public async Task LeftAtAYieldAfterTheCancellation_ASourceWhoseDisposalFails_DisposesWithoutThatFailure(string op)
    {
        var source = new HostileSource(Hostility.DisposeThrows, new InvalidDataException("the source's disposal failed"), items: int.MaxValue);
        IAsyncEnumerable<int> sequence = Over(op, source);
        using var cts = new CancellationTokenSource();
        IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();

        cts.Cancel(); // then the consumer leaves, as after a break

        await FluentActions.Awaiting(() => e.DisposeAsync().AsTask().WaitAsync(TestWork.Bound)).Should().NotThrowAsync(
            "once the token is cancelled the concurrent and read-ahead operators surface the cancellation, not a disposal failure");
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(OverOperators))]
    public async Task LeftAtAYieldBeforeTheCancellation_ASourceWhoseDisposalFailsMeanwhile_DisposesWithThatFailure(string op)
    {
        using var cts = new CancellationTokenSource();
        var source = new EndlessGatedDisposal();
        IAsyncEnumerable<int> sequence = Over(op, source);
        IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();

        Task disposed = e.DisposeAsync().AsTask(); // the consumer leaves; nothing is cancelled yet
        await source.Disposing.Task.WaitAsync(TestWork.Bound);
        cts.Cancel(); // while the source's disposal is under way
        source.FinishDisposal(new InvalidDataException("the source's disposal failed"));

        await FluentActions.Awaiting(() => disposed.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidDataException>(
            "the consumer left before the cancellation, so the source's disposal failure surfaces from DisposeAsync");
        source.Disposals.Should().Be(1);
    }

    [Theory]
    [InlineData("Merge")]
    [InlineData("MergeLimited")]
    [InlineData("Map")]
    [InlineData("MapUnordered")]
    [InlineData("Tee")]
    public async Task CancelledByTheSourcesCurrent_YieldsNothingMore(string op)
    {
        // (Not Prefetch: it reads the source on the pool while the consumer works on an earlier item, so the item in the
        // consumer's hands when the read cancels was handed out before the cancellation.)
        using var cts = new CancellationTokenSource();
        var source = new CurrentCancels(cts, at: 1);
        IAsyncEnumerable<int> sequence = op == "Tee" ? source.Tee(1)[0] : Over(op, source);
        (await YieldedAfterTheCancellationAsync(sequence, cts)).Should().BeEmpty("once the token is cancelled no further item is yielded, also when reading the item cancelled it");
    }

    [Theory, MemberData(nameof(SourceOperators))]
    public async Task ASourceThatEndsAndCancelsWhileItsDisposalFails_EndsAsTheCancellation(string op)
    {
        using var cts = new CancellationTokenSource();
        var source = new EndsThenDisposalCancelsAndFails(cts);
        IAsyncEnumerable<int> sequence = Over(op, source);
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);

        // The source ends at once; the operator disposes it, and its disposal cancels the token, then fails.
        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>(
            "once the token is cancelled the enumeration ends with the cancellation, also when the source ended and failed to dispose");
        source.Disposals.Should().Be(1);
    }

    [Theory]
    [InlineData("Map")]
    [InlineData("MapUnordered")]
    [InlineData("AsCompleted")]
    [InlineData("Merge")]
    public async Task CancelledWhileRunningWorkIsAwaitedAfterAFailure_EndsAsTheCancellation(string op)
    {
        using var cts = new CancellationTokenSource();
        var gate = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);

        // The first call (or source) waits on the gate, ignoring its token; the second fails synchronously as it starts.
        IAsyncEnumerable<int> sequence = op switch
        {
            "Map" => Sources.From(Enumerable.Range(0, 2)).Map((x, _) => x == 1 ? throw new InvalidDataException("call 1 failed") : new ValueTask<int>(gate.Task), 2),
            "MapUnordered" => Sources.From(Enumerable.Range(0, 2)).MapUnordered((x, _) => x == 1 ? throw new InvalidDataException("call 1 failed") : new ValueTask<int>(gate.Task), 2),
            "AsCompleted" => AsyncIter.AsCompleted(Enumerable.Range(0, 2).Select(x => (Func<CancellationToken, Task<int>>)(_ => x == 1 ? throw new InvalidDataException("call 1 failed") : gate.Task)), 2),
            _ => AsyncIter.Merge(Gated(gate.Task), new HostileSource(Hostility.MoveNextThrowsSynchronously, new InvalidDataException("the source's move failed"), at: 0)),
        };
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        Task<bool> move = e.MoveNextAsync().AsTask(); // the failure is taken; the operator waits for the gated call
        move.IsCompleted.Should().BeFalse("the operator waits for the call that ignores its token");

        cts.Cancel(); // before the enumeration has ended
        gate.SetResult(1);

        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>(
            "once the token is cancelled the enumeration ends with the cancellation, also when a call failed meanwhile");
    }

    [Theory]
    [InlineData("Map")]
    [InlineData("MapUnordered")]
    [InlineData("AsCompleted")]
    public async Task CancelledByACallStartedBeforeAYield_YieldsNothingMore(string op)
    {
        using var cts = new CancellationTokenSource();
        ValueTask<int> Call(int x)
        {
            if (x == 2)
            {
                cts.Cancel(); // "found it: stop the pipeline", from the call the operator starts before handing out item 0
            }

            return new ValueTask<int>(x);
        }

        IAsyncEnumerable<int> sequence = op switch
        {
            "Map" => Sources.From(Enumerable.Range(0, 10)).Map((x, _) => Call(x), 2),
            "MapUnordered" => Sources.From(Enumerable.Range(0, 10)).MapUnordered((x, _) => Call(x), 2),
            _ => AsyncIter.AsCompleted(Enumerable.Range(0, 10).Select(x => (Func<CancellationToken, Task<int>>)(_ => Call(x).AsTask())), 2),
        };
        (await YieldedAfterTheCancellationAsync(sequence, cts)).Should().BeEmpty("once the token is cancelled no further item is yielded, not even one already computed");
    }

    private static async IAsyncEnumerable<int> Gated(Task<int> gate)
    {
        yield return await gate; // ignores its token
    }


    /// <summary>Yields 0, 1, 2, ... at once, ignoring its token; its DisposeAsync completes when the test says.</summary>
    private sealed class EndlessGatedDisposal : IAsyncEnumerable<int>, IAsyncEnumerator<int>
    {
        private readonly TaskCompletionSource _disposal = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _disposals;

        public TaskCompletionSource Disposing { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Disposals => Volatile.Read(ref _disposals);

        public int Current { get; private set; } = -1;

        public void FinishDisposal(Exception failure) => _disposal.SetException(failure);

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) => this;

        public ValueTask<bool> MoveNextAsync()
        {
            Current++;
            return new ValueTask<bool>(true);
        }

        public ValueTask DisposeAsync()
        {
            Interlocked.Increment(ref _disposals);
            Disposing.TrySetResult();
            return new ValueTask(_disposal.Task);
        }
    }

    /// <summary>Yields 0, 1, 2 at once, ignoring its token; reading item <paramref name="at"/> cancels the consumer's token.</summary>
    private sealed class CurrentCancels(CancellationTokenSource consumer, int at) : IAsyncEnumerable<int>, IAsyncEnumerator<int>
    {
        private int _index = -1;

        public int Current
        {
            get
            {
                if (_index == at)
                {
                    consumer.Cancel();
                }

                return _index;
            }
        }

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) => this;

        public ValueTask<bool> MoveNextAsync() => new(++_index < 3);

        public ValueTask DisposeAsync() => default;
    }

    /// <summary>Yields nothing; its DisposeAsync cancels the consumer's token, then fails.</summary>
    private sealed class EndsThenDisposalCancelsAndFails(CancellationTokenSource consumer) : IAsyncEnumerable<int>, IAsyncEnumerator<int>
    {
        private int _disposals;

        public int Disposals => Volatile.Read(ref _disposals);

        public int Current => 0;

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) => this;

        public ValueTask<bool> MoveNextAsync() => new(false);

        public ValueTask DisposeAsync()
        {
            Interlocked.Increment(ref _disposals);
            consumer.Cancel();
            return ValueTask.FromException(new InvalidDataException("the source's disposal failed"));
        }
    }


    [Theory]
    [InlineData("Merge")]
    [InlineData("MergeLimited")]
    [InlineData("Map")]
    public async Task CancelledAtAYield_TheNextMoveAsksTheSourceNothing_AndEndsAsTheCancellation(string op)
    {
        using var cts = new CancellationTokenSource();
        var source = new TestWork.GatedMoveSource(ready: 1); // item 0 at once; its next move waits on a gate, ignoring the token
        IAsyncEnumerable<int> sequence = op switch
        {
            "Merge" => AsyncIter.Merge(source),
            "MergeLimited" => AsyncIter.Merge(new IAsyncEnumerable<int>[] { source }.AsEnumerable(), 1),
            _ => source.Map((x, _) => new ValueTask<int>(x), 1),
        };
        IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        int movesBefore = source.Moves;

        cts.Cancel(); // nothing of the operator is running now
        Task<bool> move = e.MoveNextAsync().AsTask();
        int movesAfter = source.Moves; // Merge starts a source's move synchronously, within the consumer's MoveNextAsync
        source.ReleaseMove(); // the source's pending move (if any) ends only now
        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        await e.DisposeAsync();

        movesAfter.Should().Be(movesBefore, "no source is asked for an item after the token was cancelled (Map asks nothing)");
    }

    /// <summary>
    /// Once the token is cancelled nothing new starts (docs/architecture.md, the life of a call: "Stop"): the next move
    /// neither asks the source for an item nor starts a selector call, whether the token was cancelled while the consumer
    /// held an item or while it waited for a call that then completes (ignoring its token), with results still to take.
    /// </summary>
    [Theory]
    [InlineData("Map", true)]
    [InlineData("Map", false)]
    [InlineData("MapUnordered", true)]
    [InlineData("MapUnordered", false)]
    public async Task CancelledWithResultsStillToTake_TheNextMoveStartsNothing_AndEndsAsTheCancellation(string op, bool atYield)
    {
        using var cts = new CancellationTokenSource();
        var source = Sources.From(Enumerable.Range(0, 10));
        var call1 = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        int started = 0;
        Func<int, CancellationToken, ValueTask<int>> selector = (x, _) =>
        {
            Interlocked.Increment(ref started);
            return x == 1 && !atYield ? new ValueTask<int>(call1.Task) : new ValueTask<int>(x);
        };
        IAsyncEnumerable<int> sequence = op == "Map" ? source.Map(selector, 1) : source.MapUnordered(selector, 1);
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);
        int movesBefore = source.MoveNextCalls;
        int startedBefore = started;

        Task<bool> move;
        if (atYield)
        {
            cts.Cancel(); // call 1 has completed: its result waits to be taken
            move = e.MoveNextAsync().AsTask();
        }
        else
        {
            move = e.MoveNextAsync().AsTask(); // waits for call 1
            cts.Cancel();
            call1.SetResult(1);
        }

        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        source.MoveNextCalls.Should().Be(movesBefore, "the source is asked for nothing once the token is cancelled");
        started.Should().Be(startedBefore, "no selector call starts once the token is cancelled");
    }

    /// <summary>
    /// As above, for Map's window: call 1 completed before call 0 and was taken into the window, where it waits for its
    /// turn. Cancelled while the consumer holds item 0, the next move yields nothing, asks the source for nothing and
    /// starts no selector call.
    /// </summary>
    [Fact]
    public async Task Map_CancelledAtAYield_AResultWaitingInTheWindow_TheNextMoveStartsNothing()
    {
        using var cts = new CancellationTokenSource();
        var source = Sources.From(Enumerable.Range(0, 10));
        var calls = new[] { new TaskCompletionSource<int>(), new TaskCompletionSource<int>() }; // continuations inline
        int started = 0;
        Func<int, CancellationToken, ValueTask<int>> selector = (x, _) =>
        {
            Interlocked.Increment(ref started);
            return x < 2 ? new ValueTask<int>(calls[x].Task) : new ValueTask<int>(x);
        };
        await using IAsyncEnumerator<int> e = source.Map(selector, 2).GetAsyncEnumerator(cts.Token);
        ValueTask<bool> first = e.MoveNextAsync();
        TestWork.CompleteInline(() => calls[1].SetResult(1)); // taken first, into the window behind call 0
        TestWork.CompleteInline(() => calls[0].SetResult(0));
        (await first.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);
        int movesBefore = source.MoveNextCalls;
        int startedBefore = started;

        cts.Cancel();

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        source.MoveNextCalls.Should().Be(movesBefore, "the source is asked for nothing once the token is cancelled");
        started.Should().Be(startedBefore, "no selector call starts once the token is cancelled");
    }

    /// <summary>
    /// As above, while the consumer waits for the source's next item: cancelled then, an item the source hands out
    /// afterwards (it ignores its token) gets no selector call, and the move ends as the cancellation.
    /// </summary>
    [Theory]
    [InlineData("Map")]
    [InlineData("MapUnordered")]
    public async Task CancelledWhileWaitingForTheSourcesItem_AnItemThatThenArrives_StartsNoSelectorCall(string op)
    {
        using var cts = new CancellationTokenSource();
        var source = new TestWork.GatedMoveSource(ready: 1); // item 0 at once; the move to item 1 waits, ignoring the token
        var selected = new ConcurrentQueue<int>();
        Func<int, CancellationToken, ValueTask<int>> selector = (x, _) =>
        {
            selected.Enqueue(x);
            return new ValueTask<int>(x);
        };
        IAsyncEnumerable<int> sequence = op == "Map" ? source.Map(selector, 2) : source.MapUnordered(selector, 2);
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        Task<bool> move = e.MoveNextAsync().AsTask(); // waits for the source's item 1

        cts.Cancel();
        TestWork.CompleteInline(source.ReleaseMove);

        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        selected.Should().Equal([0], "item 1 arrived after the token was cancelled: no selector call starts for it");
    }

    [Theory, MemberData(nameof(OverOperators))]
    public async Task BreakWithAnUncancelledToken_ASourceWhoseCleanupWatchesItsToken_DisposesWithoutCancellation(string op)
    {
        var disposed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        IAsyncEnumerable<int> source = CleansUpWithItsToken(disposed);
        IAsyncEnumerable<int> sequence = Over(op, source);

        await FluentActions.Awaiting(() => BreakAtTheFirstItemAsync(sequence)).Should().NotThrowAsync("the consumer's token was never cancelled and the source's cleanup succeeds when not cancelled");
        disposed.Task.IsCompleted.Should().BeTrue();
    }

    [Theory, MemberData(nameof(SourceOperators))]
    public async Task AtTheEnd_ASourceWhoseDisposalWatchesItsToken_EndsNormally(string op)
    {
        var source = new DisposalWatchesToken(2);
        IAsyncEnumerable<int> sequence = Over(op, source);

        (await sequence.ToArrayAsync().AsTask().WaitAsync(TestWork.Bound)).Should().Equal(0, 1);
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task AsCompleted_LeftAtAYieldAfterTheCancellation_AWorkSequenceWhoseDisposalFails_DisposesWithoutThatFailure()
    {
        using var cts = new CancellationTokenSource();
        IAsyncEnumerator<int> e = AsyncIter.AsCompleted(Sources.DisposingWithFailure(null, new ArithmeticException("the sequence's disposal")), maxConcurrency: 1)
            .GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();

        cts.Cancel(); // then the consumer leaves, as after a break

        await FluentActions.Awaiting(() => e.DisposeAsync().AsTask().WaitAsync(TestWork.Bound)).Should().NotThrowAsync(
            "once the token is cancelled the lazy operators end as the cancellation; a consumer that cancelled and then left gets nothing from DisposeAsync");
    }

    [Theory]
    [InlineData("Map")]
    [InlineData("MapUnordered")]
    [InlineData("Merge")]
    [InlineData("MergeLimited")]
    [InlineData("Prefetch")]
    [InlineData("BatchTimed")]
    [InlineData("AsCompletedWork")]
    [InlineData("AsCompletedTasks")]
    public async Task OpeningTheSourceCancelsThenFails_EndsAsTheCancellation(string op)
    {
        using var cts = new CancellationTokenSource();
        var source = new OpeningCancelsThenFails(cts);
        IAsyncEnumerable<int> sequence = op switch
        {
            "AsCompletedWork" => AsyncIter.AsCompleted(new WorkOpeningCancelsThenFails<Func<CancellationToken, Task<int>>>(cts)),
            "AsCompletedTasks" => AsyncIter.AsCompleted(new WorkOpeningCancelsThenFails<Task<int>>(cts)),
            _ => Over(op, source),
        };
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>(
            "the token was cancelled before the enumeration ended");
    }

    private static async IAsyncEnumerable<int> CleansUpWithItsToken(TaskCompletionSource disposed, [EnumeratorCancellation] CancellationToken ct = default)
    {
        try
        {
            for (int i = 0; ; i++)
            {
                yield return i;
            }
        }
        finally
        {
            disposed.TrySetResult();
            ct.ThrowIfCancellationRequested(); // as an `await FlushAsync(ct)` / `await conn.CloseAsync(ct)` would
        }
    }

    /// <summary>Yields 0..count-1 at once; its DisposeAsync throws if its token is cancelled (a cleanup call given the token).</summary>
    private sealed class DisposalWatchesToken(int count) : IAsyncEnumerable<int>
    {
        private int _disposals;

        public int Disposals => Volatile.Read(ref _disposals);

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) => new Enumerator(this, cancellationToken);

        private sealed class Enumerator(DisposalWatchesToken owner, CancellationToken token) : IAsyncEnumerator<int>
        {
            public int Current { get; private set; } = -1;

            public ValueTask<bool> MoveNextAsync() => new(++Current < owner._count);

            public ValueTask DisposeAsync()
            {
                Interlocked.Increment(ref owner._disposals);
                return token.IsCancellationRequested ? ValueTask.FromCanceled(token) : default;
            }
        }

        private readonly int _count = count;
    }

    private sealed class OpeningCancelsThenFails(CancellationTokenSource consumer) : IAsyncEnumerable<int>
    {
        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default)
        {
            consumer.Cancel();
            throw new InvalidDataException("the source could not be opened");
        }
    }

    private sealed class WorkOpeningCancelsThenFails<T>(CancellationTokenSource consumer) : IEnumerable<T>
    {
        public IEnumerator<T> GetEnumerator()
        {
            consumer.Cancel();
            throw new InvalidDataException("the work could not be read");
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    [Theory]
    [InlineData("Map")]
    [InlineData("MapUnordered")]
    [InlineData("MapLimited")]
    [InlineData("Merge")]
    [InlineData("MergeLimited")]
    [InlineData("Prefetch")]
    [InlineData("BatchTimed")]
    public async Task BreakWithAnUncancelledToken_ASourceCalledWithATokenOfItsOwn_WhoseCleanUpGivesWay_DisposesWithoutFailure(string op)
    {
        using var application = new CancellationTokenSource(); // never cancelled: the source's iterator watches a token linked to it
        var disposed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        IAsyncEnumerable<int> source = FlushesUntilCancelled(disposed, application.Token);
        using var limiter = new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 4, QueueLimit = 10 });
        IAsyncEnumerable<int> sequence = op == "MapLimited" ? source.Map((x, _) => new ValueTask<int>(x), 2, limiter) : Over(op, source);

        await FluentActions.Awaiting(() => BreakAtTheFirstItemAsync(sequence)).Should().NotThrowAsync("the source's clean-up only gave way to the operator's cancellation, through a linked token");
        disposed.Task.IsCompleted.Should().BeTrue();
    }

    [Fact]
    public async Task Merge_BreakWithAnUncancelledToken_TheSequenceOfSourcesFailingToDispose_SurfacesIt()
    {
        var disposed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        IAsyncEnumerable<int> sequence = AsyncIter.Merge(SourcesWhoseDisposalCancels(disposed), 1);

        await FluentActions.Awaiting(() => BreakAtTheFirstItemAsync(sequence)).Should().ThrowAsync<OperationCanceledException>().WithMessage("the sequence of sources' own clean-up",
            "the sequence of sources was given no token: its disposal failure is a failure");
        disposed.Task.IsCompleted.Should().BeTrue();

        static IEnumerable<IAsyncEnumerable<int>> SourcesWhoseDisposalCancels(TaskCompletionSource disposed)
        {
            try
            {
                yield return Sources.Endless(SourceMode.Yielding);
                yield return Sources.Endless(SourceMode.Yielding);
            }
            finally
            {
                disposed.TrySetResult();
                throw new OperationCanceledException("the sequence of sources' own clean-up");
            }
        }
    }

    /// <summary>Yields 0, 1, 2, ...; its clean-up waits until its token is cancelled (a flush given the token).</summary>
    private static async IAsyncEnumerable<int> FlushesUntilCancelled(TaskCompletionSource disposed, [EnumeratorCancellation] CancellationToken ct = default)
    {
        try
        {
            for (int i = 0; ; i++)
            {
                await Task.Yield();
                yield return i;
            }
        }
        finally
        {
            disposed.TrySetResult();
            var flushed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using (ct.Register(() => flushed.TrySetCanceled(ct)))
            {
                await flushed.Task; // never flushed: gives way once its token is cancelled
            }
        }
    }

    /// <summary>Its first MoveNextAsync blocks (synchronously) until its token is cancelled, then returns a move that
    /// has already failed (a blocking read aborted by the token).</summary>
    private sealed class BlockingAbortedSource(TaskCompletionSource entered) : IAsyncEnumerable<int>, IAsyncEnumerator<int>
    {
        private CancellationToken _token;

        public int Current => 0;

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default)
        {
            _token = cancellationToken;
            return this;
        }

        public ValueTask<bool> MoveNextAsync()
        {
            entered.TrySetResult();
            return _token.WaitHandle.WaitOne(TestWork.Bound)
                ? ValueTask.FromException<bool>(new IOException("the read was aborted"))
                : throw new TimeoutException("never cancelled");
        }

        public ValueTask DisposeAsync() => default;
    }

    /// <summary>Its first MoveNextAsync ends (false) once its token is cancelled; its DisposeAsync fails.</summary>
    private sealed class EndsOnCancelDisposeFails(TaskCompletionSource entered) : IAsyncEnumerable<int>, IAsyncEnumerator<int>
    {
        private CancellationToken _token;
        private int _disposals;

        public int Disposals => Volatile.Read(ref _disposals);

        public int Current => 0;

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default)
        {
            _token = cancellationToken;
            return this;
        }

        public async ValueTask<bool> MoveNextAsync()
        {
            var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using (_token.Register(() => cancelled.TrySetResult()))
            {
                entered.TrySetResult();
                await cancelled.Task;
            }

            return false;
        }

        public ValueTask DisposeAsync()
        {
            Interlocked.Increment(ref _disposals);
            return ValueTask.FromException(new InvalidDataException("the source's disposal failed"));
        }
    }

    /// <summary>Yields nothing: its first move waits until its token is cancelled, then fails with an IOException inside
    /// the token's callback (as a client aborted by its token may).</summary>
    private static async IAsyncEnumerable<int> FailsWhenCancelled(TaskCompletionSource stalled, [EnumeratorCancellation] CancellationToken ct = default)
    {
        Task<int> aborted = TestWork.FailsWhenCancelled(ct);
        stalled.TrySetResult();
        yield return await aborted;
    }

    /// <summary>Enumerates <paramref name="sequence"/> with <paramref name="cts"/>' token until it ends with the
    /// cancellation; the items handed out while that token was cancelled.</summary>
    private static async Task<List<int>> YieldedAfterTheCancellationAsync(IAsyncEnumerable<int> sequence, CancellationTokenSource cts)
    {
        var yielded = new List<int>();
        Func<Task> enumerate = async () =>
        {
            await foreach (int x in sequence.WithCancellation(cts.Token))
            {
                if (cts.IsCancellationRequested)
                {
                    yielded.Add(x);
                }
            }
        };

        await enumerate.Should().ThrowAsync<OperationCanceledException>();
        return yielded;
    }

    /// <summary>
    /// The cancellation surfaces as an <see cref="OperationCanceledException"/> of the caller's token, whatever the
    /// operator was waiting on inside (asynciter.md, shared rules): the timed Batch's partial batch too, whose wait for
    /// more items also watches the batch's own deadline.
    /// </summary>
    [Theory, MemberData(nameof(OverOperators))]
    [InlineData("BatchPartial")]
    [InlineData("Tee")]
    public async Task CancelledWhileTheSourceStalls_TheExceptionCarriesTheCallersToken(string op)
    {
        var stalled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var never = new TaskCompletionSource();
        async IAsyncEnumerable<int> OneItemThenStall([EnumeratorCancellation] CancellationToken ct = default)
        {
            yield return 1;
            stalled.TrySetResult();
            await never.Task.WaitAsync(ct);
        }

        var time = new CountingTimeProvider();
        IAsyncEnumerable<int> sequence = op switch
        {
            "BatchPartial" => OneItemThenStall().Batch(10, TimeSpan.FromHours(1), time).Select(b => b[0]),
            "Tee" => OneItemThenStall().Tee(2)[0],
            _ => Over(op, OneItemThenStall()),
        };
        using var cts = new CancellationTokenSource();
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        if (op != "BatchPartial")
        {
            (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        }

        Task<bool> move = e.MoveNextAsync().AsTask();
        await stalled.Task.WaitAsync(TestWork.Bound);
        if (op == "BatchPartial")
        {
            await time.WaitForArmedTimersAsync(1).WaitAsync(TestWork.Bound); // the partial batch waits for its deadline
        }

        await cts.CancelAsync();

        (await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);
    }

    /// <summary>Takes the first item and leaves, as a <c>break</c> does, with no token.</summary>
    private static async Task BreakAtTheFirstItemAsync(IAsyncEnumerable<int> sequence)
    {
        await foreach (int x in sequence)
        {
            break;
        }
    }

    /// <summary>The operator named <paramref name="op"/> over <paramref name="source"/>, passing its items through:
    /// <c>Map</c> and <c>MapUnordered</c> (2 at once), <c>Merge</c> (one source), <c>MergeLimited</c> (a sequence of one
    /// source, 1 at once), <c>Prefetch</c> (2), <c>BatchTimed</c> (batches of 1, an hour's delay on a fake clock).</summary>
    private static IAsyncEnumerable<int> Over(string op, IAsyncEnumerable<int> source) => op switch
    {
        "Map" => source.Map((x, _) => new ValueTask<int>(x), 2),
        "MapUnordered" => source.MapUnordered((x, _) => new ValueTask<int>(x), 2),
        "Merge" => AsyncIter.Merge(source),
        "MergeLimited" => AsyncIter.Merge(new[] { source }.AsEnumerable(), 1),
        "Prefetch" => source.Prefetch(2),
        "BatchTimed" => source.Batch(1, TimeSpan.FromHours(1), new FakeTimeProvider()).Select(b => b[0]),
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    private static IAsyncEnumerable<int> Build(string op)
    {
        IAsyncEnumerable<int> Source(int start = 0) => Sources.IgnoringToken(Enumerable.Range(start, 100));
        return op switch
        {
            "Merge" => AsyncIter.Merge(Source(), Source(1000)),
            "MergeLimited" => AsyncIter.Merge(new[] { Source(), Source(1000) }.AsEnumerable(), 1),
            "Map" => Source().Map((x, _) => new ValueTask<int>(x), 4),
            "MapUnordered" => Source().MapUnordered((x, _) => new ValueTask<int>(x), 4),
            "Prefetch" => Source().Prefetch(4),
            "BatchTimed" => Source().Batch(1, TimeSpan.FromHours(1)).Select(b => b[0]),
            "Tee" => Source().Tee(2)[0],
            "AsCompletedWork" => AsyncIter.AsCompleted(Enumerable.Range(0, 100).Select(i => (Func<CancellationToken, Task<int>>)(_ => Task.FromResult(i)))),
            "AsCompletedTasks" => AsyncIter.AsCompleted(Enumerable.Range(0, 100).Select(Task.FromResult)),
            _ => throw new ArgumentOutOfRangeException(nameof(op)),
        };
    }
}
