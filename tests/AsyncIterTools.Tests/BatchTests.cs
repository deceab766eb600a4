using System.Runtime.CompilerServices;

namespace AsyncIterTools.Tests;

public sealed class BatchTests
{
    [Fact]
    public void InvalidArguments_ThrowAtTheCall()
    {
        var source = Sources.Of(SourceMode.Synchronous, 1);
        FluentActions.Invoking(() => ((IAsyncEnumerable<int>)null!).Batch(2)).Should().Throw<ArgumentNullException>().WithParameterName("source");
        FluentActions.Invoking(() => source.Batch(0)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("size");
        FluentActions.Invoking(() => ((IAsyncEnumerable<int>)null!).Batch(2, TimeSpan.FromSeconds(1))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        FluentActions.Invoking(() => source.Batch(0, TimeSpan.FromSeconds(1))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxSize");
        FluentActions.Invoking(() => source.Batch(2, TimeSpan.Zero)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxDelay");
        FluentActions.Invoking(() => source.Batch(2, Timeout.InfiniteTimeSpan)).Should().NotThrow();
        source.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Empty_GivesEmpty(SourceMode mode)
    {
        (await Sources.Of<int>(mode).Batch(3).ToListAsync()).Should().BeEmpty();
        (await Sources.Of<int>(mode).Batch(3, TimeSpan.FromSeconds(1), new FakeTimeProvider()).ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeEmpty();
    }

    [Theory]
    [InlineData(SourceMode.Synchronous, 10, 3)]
    [InlineData(SourceMode.Yielding, 10, 3)]
    [InlineData(SourceMode.Synchronous, 9, 3)]
    [InlineData(SourceMode.Yielding, 1, 5)]
    [InlineData(SourceMode.Synchronous, 2_500, 2_000)]
    public async Task Values_MatchChunk(SourceMode mode, int count, int size)
    {
        int[] items = Enumerable.Range(0, count).ToArray();
        var source = Sources.From(items, mode);
        List<int[]> batches = await source.Batch(size).ToListAsync();
        batches.Should().BeEquivalentTo(items.Chunk(size), o => o.WithStrictOrdering());
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Strict_YieldsFullBatches_ThenThrowsOnAShortOne(SourceMode mode)
    {
        var source = Sources.From(Enumerable.Range(0, 7), mode);
        var seen = new List<int[]>();
        Func<Task> act = async () =>
        {
            await foreach (int[] batch in source.Batch(3, strict: true))
            {
                seen.Add(batch);
            }
        };

        await act.Should().ThrowAsync<InvalidOperationException>();
        seen.Should().BeEquivalentTo(new[] { new[] { 0, 1, 2 }, new[] { 3, 4, 5 } }, o => o.WithStrictOrdering());
        source.Disposals.Should().Be(1);
        (await Sources.From(Enumerable.Range(0, 6), mode).Batch(3, strict: true).ToListAsync()).Should().HaveCount(2);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task EarlyBreak_Error_Cancellation_DisposeTheSourceOnce(SourceMode mode)
    {
        var source = Sources.From(Enumerable.Range(0, 100), mode);
        await foreach (int[] batch in source.Batch(4))
        {
            break;
        }

        source.Disposals.Should().Be(1);
        source.Produced.Should().Be(4);

        var failing = Sources.Failing(Enumerable.Range(0, 10), failAt: 5, mode);
        await FluentActions.Awaiting(() => failing.Batch(2).ToListAsync().AsTask()).Should().ThrowAsync<InvalidOperationException>();
        failing.Disposals.Should().Be(1);

        using var cts = new CancellationTokenSource();
        var cancelled = Sources.From(Enumerable.Range(0, 100), mode);
        Func<Task> act = async () =>
        {
            await foreach (int[] batch in cancelled.Batch(2).WithCancellation(cts.Token))
            {
                cts.Cancel();
            }
        };
        await act.Should().ThrowAsync<OperationCanceledException>();
        cancelled.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Timed_FastSource_GivesFullBatches_InOrder(SourceMode mode)
    {
        int[] items = Enumerable.Range(0, 23).ToArray();
        var source = Sources.From(items, mode);
        List<int[]> batches = await source.Batch(5, Timeout.InfiniteTimeSpan).ToListAsync().AsTask().WaitAsync(TestWork.Bound);
        batches.Should().BeEquivalentTo(items.Chunk(5), o => o.WithStrictOrdering());
        source.Disposals.Should().Be(1);

        // With a clock that never moves, a finite delay never fires: batches are cut by size only.
        List<int[]> timed = await Sources.From(items, mode).Batch(5, TimeSpan.FromSeconds(1), new FakeTimeProvider()).ToListAsync().AsTask().WaitAsync(TestWork.Bound);
        timed.Should().BeEquivalentTo(items.Chunk(5), o => o.WithStrictOrdering());
    }

    [Fact]
    public async Task Timed_PartialBatch_IsEmittedAtItsDeadline_WhileTheSourceIsStalled_AndNoEmptyBatchEver()
    {
        var time = new CountingTimeProvider();
        var gate = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var stalled = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        IAsyncEnumerable<int> source = TestWork.ThenWait(new[] { 1, 2 }, gate.Task, () => stalled.TrySetResult(true));

        await using IAsyncEnumerator<int[]> e = source.Batch(10, TimeSpan.FromSeconds(5), time).GetAsyncEnumerator();
        ValueTask<bool> move = e.MoveNextAsync();
        await stalled.Task.WaitAsync(TestWork.Bound);
        await time.WaitForArmedTimersAsync().WaitAsync(TestWork.Bound); // the consumer is parked on its deadline
        time.Advance(TimeSpan.FromSeconds(4));
        move.IsCompleted.Should().BeFalse();

        time.Advance(TimeSpan.FromSeconds(1));
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Equal(1, 2);

        // Nothing is waiting: time passing emits nothing (no empty batch); the end of the source ends the sequence.
        move = e.MoveNextAsync();
        time.Advance(TimeSpan.FromSeconds(60));
        move.IsCompleted.Should().BeFalse();
        gate.SetResult(true);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeFalse();
    }

    [Fact]
    public async Task Timed_SourceError_IsThrownAfterThePartialBatchBeforeIt()
    {
        var source = Sources.Failing(Enumerable.Range(0, 10), failAt: 3, SourceMode.Yielding);
        var seen = new List<int[]>();
        Func<Task> act = async () =>
        {
            await foreach (int[] batch in source.Batch(5, TimeSpan.FromMinutes(5), new FakeTimeProvider()))
            {
                seen.Add(batch);
            }
        };

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("source failure");
        seen.Should().BeEquivalentTo(new[] { new[] { 0, 1, 2 } }, o => o.WithStrictOrdering());
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task Timed_Dispose_StopsTheReadAhead_AndDisposesTheSourceOnce()
    {
        var gate = new TaskCompletionSource<bool>();
        var stalled = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var disposed = 0;
        async IAsyncEnumerable<int> Source([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
        {
            try
            {
                yield return 1;
                stalled.SetResult(true);
                await gate.Task.WaitAsync(ct);
            }
            finally
            {
                Interlocked.Increment(ref disposed);
            }
        }

        var time = new CountingTimeProvider();
        await using (IAsyncEnumerator<int[]> e = Source().Batch(2, TimeSpan.FromSeconds(1), time).GetAsyncEnumerator())
        {
            ValueTask<bool> move = e.MoveNextAsync();
            await stalled.Task.WaitAsync(TestWork.Bound);
            await time.WaitForArmedTimersAsync().WaitAsync(TestWork.Bound);
            time.Advance(TimeSpan.FromSeconds(1));
            (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
            e.Current.Should().Equal(1);
        }

        disposed.Should().Be(1);
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task Timed_Cancellation_Throws()
    {
        var gate = new TaskCompletionSource<bool>();
        using var cts = new CancellationTokenSource();
        await using IAsyncEnumerator<int[]> e = TestWork.ThenWait(new[] { 1 }, gate.Task).Batch(3, TimeSpan.FromSeconds(1), new FakeTimeProvider()).GetAsyncEnumerator(cts.Token);
        ValueTask<bool> move = e.MoveNextAsync();
        cts.Cancel();
        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Timed_SourcesDisposalFailing_Surfaces_ReadToTheEndOrLeftEarly(bool earlyBreak)
    {
        var source = new TrackingSource<int>(Enumerable.Range(0, 100)) { DisposeFailure = new InvalidOperationException("dispose failed") };
        await FluentActions.Awaiting(() => Sources.ReadAsync(source.Batch(2, TimeSpan.FromHours(1), new FakeTimeProvider()), earlyBreak))
            .Should().ThrowAsync<InvalidOperationException>().WithMessage("dispose failed");
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task Timed_AnItemReadAfterTheBatchWasDue_StartsTheNextBatch_HoweverLateTheConsumerAsks()
    {
        var time = new CountingTimeProvider();
        TaskCompletionSource[] asked = Enumerable.Range(0, 4).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        TaskCompletionSource[] release = Enumerable.Range(0, 4).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();

        // Code after a yield runs only when the read-ahead asks for the next item, i.e. after it stamped the previous one.
        async IAsyncEnumerable<string> Source([EnumeratorCancellation] CancellationToken ct = default)
        {
            yield return "A";
            asked[1].TrySetResult();
            await release[1].Task.WaitAsync(ct);
            yield return "B";
            asked[2].TrySetResult();
            await release[2].Task.WaitAsync(ct);
            yield return "C";
            asked[3].TrySetResult();
            await release[3].Task.WaitAsync(ct);
        }

        await using IAsyncEnumerator<string[]> e = Source().Batch(10, TimeSpan.FromSeconds(5), time).GetAsyncEnumerator();
        await TakeTheBatchOfAAtItsDeadlineAsync(e, asked[1].Task, time);

        // While the consumer is busy with [A]: B is read at t=5, C at t=15, after B's batch was due (t=10).
        release[1].SetResult();
        await asked[2].Task.WaitAsync(TestWork.Bound);
        time.Advance(TimeSpan.FromSeconds(10));
        release[2].SetResult();
        await asked[3].Task.WaitAsync(TestWork.Bound);

        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Equal(new[] { "B" }, "C was read after B's batch was due");
        release[3].SetResult();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Equal("C");
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeFalse();
    }

    [Fact]
    public async Task Timed_AConsumerAskingLate_GetsTheBatchMaxDelayAfterItsFirstItemWasRead_NotAfterItAsked()
    {
        var time = new CountingTimeProvider();
        TaskCompletionSource[] asked = Enumerable.Range(0, 3).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        // Code after a yield runs only when the read-ahead asks for the next item, i.e. after it stamped the previous one.
        async IAsyncEnumerable<string> Source([EnumeratorCancellation] CancellationToken ct = default)
        {
            yield return "A";
            asked[1].TrySetResult();
            await release.Task.WaitAsync(ct);
            yield return "B";
            asked[2].TrySetResult();
            await new TaskCompletionSource().Task.WaitAsync(ct); // stalls until the read-ahead stops
        }

        await using IAsyncEnumerator<string[]> e = Source().Batch(10, TimeSpan.FromSeconds(5), time).GetAsyncEnumerator();
        await TakeTheBatchOfAAtItsDeadlineAsync(e, asked[1].Task, time);

        // B is read at t=5 while the consumer is busy with [A]; it asks for the next batch at t=8.
        release.SetResult();
        await asked[2].Task.WaitAsync(TestWork.Bound);
        time.Advance(TimeSpan.FromSeconds(3));
        ValueTask<bool> move = e.MoveNextAsync();
        await time.WaitForArmedTimersAsync().WaitAsync(TestWork.Bound);
        time.Advance(TimeSpan.FromSeconds(1));
        move.IsCompleted.Should().BeFalse("B's batch is due at t=10");

        time.Advance(TimeSpan.FromSeconds(1));
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue("the batch is due maxDelay after B was read, not after the consumer asked");
        e.Current.Should().Equal("B");
    }

    /// <summary>Takes the first batch, of A alone, at its deadline: 5 s after A was read, at t=0 (<paramref name="aRead"/>
    /// completes when the read-ahead asks for the item after A, which it does once it has stamped A).</summary>
    private static async Task TakeTheBatchOfAAtItsDeadlineAsync(IAsyncEnumerator<string[]> e, Task aRead, CountingTimeProvider time)
    {
        ValueTask<bool> move = e.MoveNextAsync();
        await aRead.WaitAsync(TestWork.Bound);
        await time.WaitForArmedTimersAsync().WaitAsync(TestWork.Bound);
        time.Advance(TimeSpan.FromSeconds(5));
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Equal("A");
    }

    // An item read exactly maxDelay after a batch's first item: the deadline has passed by then (it counts >= maxDelay),
    // so the item starts the next batch, for a consumer that waited for the batch and for one that asks late alike.
    private static async IAsyncEnumerable<string> ZThenAThenB(TaskCompletionSource[] asked, TaskCompletionSource[] release, [EnumeratorCancellation] CancellationToken ct = default)
    {
        yield return "Z";
        asked[1].TrySetResult();
        await release[1].Task.WaitAsync(ct);
        yield return "A";
        asked[2].TrySetResult();
        await release[2].Task.WaitAsync(ct);
        yield return "B";
        asked[3].TrySetResult();
        await release[3].Task.WaitAsync(ct);
    }

    [Fact]
    public async Task Timed_AnItemReadExactlyAtTheDueTime_StartsTheNextBatch_ForAWaitingAndALateConsumerAlike()
    {
        // Waiting consumer: A read at t=5, the consumer waits; at t=10 the batch [A] is due and emitted; B read at t=10
        // starts the next batch.
        List<string[]> waiting = await Run(late: false);
        // Late consumer: the same reads at the same times, the consumer asks for A's batch only after B was read.
        List<string[]> lateOnes = await Run(late: true);
        waiting.Should().BeEquivalentTo(new[] { new[] { "Z" }, ["A"], ["B"] }, o => o.WithStrictOrdering());
        lateOnes.Should().BeEquivalentTo(waiting, o => o.WithStrictOrdering(),
            "an item's batch depends on when it was read, never on when the consumer looks");

        static async Task<List<string[]>> Run(bool late)
        {
            var time = new CountingTimeProvider();
            TaskCompletionSource[] asked = Enumerable.Range(0, 4).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
            TaskCompletionSource[] release = Enumerable.Range(0, 4).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
            var batches = new List<string[]>();
            await using IAsyncEnumerator<string[]> e = ZThenAThenB(asked, release).Batch(10, TimeSpan.FromSeconds(5), time).GetAsyncEnumerator();
            ValueTask<bool> move = e.MoveNextAsync();
            await asked[1].Task.WaitAsync(TestWork.Bound); // Z read at t=0
            await time.WaitForArmedTimersAsync().WaitAsync(TestWork.Bound);
            time.Advance(TimeSpan.FromSeconds(5));
            (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
            batches.Add(e.Current); // [Z]

            release[1].SetResult();
            await asked[2].Task.WaitAsync(TestWork.Bound); // A read at t=5
            if (late)
            {
                time.Advance(TimeSpan.FromSeconds(5));
                release[2].SetResult();
                await asked[3].Task.WaitAsync(TestWork.Bound); // B read at t=10
                (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
                batches.Add(e.Current);
            }
            else
            {
                move = e.MoveNextAsync();
                await time.WaitForArmedTimersAsync().WaitAsync(TestWork.Bound); // parked on A's deadline
                time.Advance(TimeSpan.FromSeconds(5));
                (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
                batches.Add(e.Current);
                release[2].SetResult();
                await asked[3].Task.WaitAsync(TestWork.Bound); // B read at t=10
            }

            release[3].SetResult();
            while (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound))
            {
                batches.Add(e.Current);
            }

            return batches;
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Timed_CancelledAfterTheLastBatch_EndsAsTheCancellation_NotAsTheSourcesEndOrFailure(bool sourceFails)
    {
        using var cts = new CancellationTokenSource();
        IAsyncEnumerable<int> source = sourceFails
            ? AsyncEnumerable.Range(0, 1).Concat(AsyncEnumerable.Range(0, 1).Select(int (_) => throw new InvalidDataException("the source's own failure")))
            : AsyncEnumerable.Range(0, 1);
        await using IAsyncEnumerator<int[]> e = source.Batch(2, TimeSpan.FromHours(1)).GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Equal(0); // the partial batch the end (or the failure) closed

        cts.Cancel();

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task Timed_CancelledWhileAFullBatchWaitsToBeHandedOut_YieldsNothing()
    {
        using var cts = new CancellationTokenSource();
        var gate0 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gate1 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        async IAsyncEnumerable<int> Source([EnumeratorCancellation] CancellationToken ct = default)
        {
            await gate0.Task;
            yield return 0;
            await gate1.Task;
            yield return 1;
            await new TaskCompletionSource().Task.WaitAsync(ct); // until cancelled
        }

        var context = new PumpContext();
        await using IAsyncEnumerator<int[]> e = Source().Batch(2, TimeSpan.FromHours(1)).GetAsyncEnumerator(cts.Token);
        ValueTask<bool> move = context.Run(() => e.MoveNextAsync()); // parks in its wait for a first item, on the context

        gate0.SetResult();
        await context.WaitForPostAsync(TestWork.Bound);
        context.Run(() => { }); // 0 read: the batch [0] waits for more
        gate1.SetResult();
        await context.WaitForPostAsync(TestWork.Bound); // 1 read: the batch is full, the consumer's resumption is queued

        cts.Cancel();
        Task<bool> moved = move.AsTask();
        await context.RunUntilAsync(moved, TestWork.Bound); // the consumer's resumption, and what it posts on its way out

        await FluentActions.Awaiting(() => moved.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>(
            "no batch is handed out once the token is cancelled, not even one that filled up meanwhile");
    }

    [Fact]
    public async Task Timed_ClockSteppingBack_TheBatchIsDueNoLaterThanMaxDelayAfterItsFirstItem()
    {
        var time = new MisbehavingTimeProvider(firstReadingAhead: TimeSpan.FromHours(1));
        (TimeSpan due, int[] batch) = await OneItemThenStallAsync(time);
        due.Should().BeLessThanOrEqualTo(TimeSpan.FromSeconds(5));
        batch.Should().Equal(1);
    }

    [Fact]
    public async Task Timed_ClockMovingOnWhileTheDeadlineIsArmed_TheBatchIsStillDueMaxDelayAfterItsFirstItem()
    {
        var time = new MisbehavingTimeProvider { MovesWhileArmingFirst = TimeSpan.FromSeconds(2) };
        var stalled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var never = new TaskCompletionSource();
        await using IAsyncEnumerator<int[]> e = TestWork.ThenWait(new[] { 1 }, never.Task, stalled.SetResult)
            .Batch(10, TimeSpan.FromSeconds(5), time).GetAsyncEnumerator();
        Task<bool> move = e.MoveNextAsync().AsTask();
        await stalled.Task.WaitAsync(TestWork.Bound);
        await time.FirstDueTime.WaitAsync(TestWork.Bound); // armed, the clock at 2 s after the item was read

        time.Advance(TimeSpan.FromSeconds(3)); // 5 s after the item was read
        (await move.WaitAsync(TestWork.Bound)).Should().BeTrue("the batch is due maxDelay after its first item was read");
        e.Current.Should().Equal(1);
    }

    [Fact]
    public async Task Timed_TimerFailsToStop_TheBatchReadIsStillHandedOut()
    {
        (_, int[] batch) = await OneItemThenStallAsync(new MisbehavingTimeProvider { TimerDisposeThrows = true });
        batch.Should().Equal(1);
    }

    /// <summary>A timed batch (5 s) over one item and then a stall: returns the due time of the batch's deadline timer,
    /// and the batch handed out once the clock has moved that far.</summary>
    private static async Task<(TimeSpan Due, int[] Batch)> OneItemThenStallAsync(MisbehavingTimeProvider time)
    {
        var stalled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var never = new TaskCompletionSource();
        await using IAsyncEnumerator<int[]> e = TestWork.ThenWait(new[] { 1 }, never.Task, stalled.SetResult)
            .Batch(10, TimeSpan.FromSeconds(5), time).GetAsyncEnumerator();
        ValueTask<bool> move = e.MoveNextAsync();
        await stalled.Task.WaitAsync(TestWork.Bound);
        TimeSpan due = await time.FirstDueTime.WaitAsync(TestWork.Bound);
        time.Advance(due);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        return (due, e.Current);
    }
}
