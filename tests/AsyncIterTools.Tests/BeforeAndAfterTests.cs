namespace AsyncIterTools.Tests;

public sealed class BeforeAndAfterTests
{
    [Fact]
    public void BeforeAndAfter_NullArguments_ThrowAtCall()
    {
        ((Action)(() => ((IAsyncEnumerable<int>)null!).BeforeAndAfter(x => true))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        var source = Sources.Of(SourceMode.Synchronous, 1);
        ((Action)(() => source.BeforeAndAfter((Func<int, bool>)null!))).Should().Throw<ArgumentNullException>().WithParameterName("predicate");
        ((Action)(() => ((IAsyncEnumerable<int>)null!).BeforeAndAfter((x, _) => new ValueTask<bool>(true)))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => source.BeforeAndAfter((Func<int, CancellationToken, ValueTask<bool>>)null!))).Should().Throw<ArgumentNullException>().WithParameterName("predicate");
        source.Enumerators.Should().Be(0);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task BeforeAndAfter_AsyncPredicate_SplitsAtTheFirstFailingItem_AndGetsTheTokenTheSourceWasOpenedWith(bool afterFirst)
    {
        var source = Sources.From("ABCdEfGhI", SourceMode.Yielding);
        var tokens = new List<CancellationToken>();
        var (before, after) = source.BeforeAndAfter(async (char c, CancellationToken ct) =>
        {
            tokens.Add(ct);
            await Task.Yield();
            return char.IsUpper(c);
        });
        using var cts = new CancellationTokenSource();

        IAsyncEnumerable<char> first = afterFirst ? after : before;
        char[] firstItems = await first.ToArrayAsync(cts.Token);
        char[] secondItems = await (afterFirst ? before : after).ToArrayAsync();

        (afterFirst ? secondItems : firstItems).Should().Equal('A', 'B', 'C');
        (afterFirst ? firstItems : secondItems).Should().Equal('d', 'E', 'f', 'G', 'h', 'I');
        tokens.Should().HaveCount(4, "called on the leading items and the first failing one, never after").And.OnlyContain(t => t == source.LastToken);
        source.LastToken.Should().Be(cts.Token, "the source is opened with the token of the half that read it first");
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_AsyncPredicateThatFailsAfterAnAwait_FailsTheReaderAndLaterReaders_DisposedOnce(SourceMode mode)
    {
        var source = Sources.Of(mode, 1, 2, 3);
        var (before, after) = source.BeforeAndAfter(async (int x, CancellationToken _) =>
        {
            await Task.Yield();
            return x == 2 ? throw new DivideByZeroException() : true;
        });
        await OperatorChecks.CollectExpectingFailureAsync<int, DivideByZeroException>(after);
        (await OperatorChecks.CollectExpectingFailureAsync<int, DivideByZeroException>(before)).Should().Equal(1);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_Empty_BothEmpty_SourceDisposed(SourceMode mode)
    {
        var source = Sources.Of<int>(mode);
        var (before, after) = source.BeforeAndAfter(x => true);
        (await before.ToArrayAsync()).Should().BeEmpty();
        (await after.ToArrayAsync()).Should().BeEmpty();
        source.Enumerators.Should().Be(1);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_BeforeFirst_MatchesMoreItertools(SourceMode mode)
    {
        // before, after = before_and_after(str.isupper, 'ABCdEfGhI')
        // ''.join(before) == 'ABC'; ''.join(after) == 'dEfGhI'
        var source = Sources.From("ABCdEfGhI", mode);
        var (before, after) = source.BeforeAndAfter(char.IsUpper);
        new string(await before.ToArrayAsync()).Should().Be("ABC");
        new string(await after.ToArrayAsync()).Should().Be("dEfGhI");
        source.Enumerators.Should().Be(1);
        source.Produced.Should().Be(9);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_AfterFirst_KeepsTheLeadingItemsForBefore(SourceMode mode)
    {
        // doc: asynciter-beforeandafter
        var source = Sources.From("ABCdEfGhI", mode);
        var (before, after) = source.BeforeAndAfter(char.IsUpper);
        new string(await after.ToArrayAsync()).Should().Be("dEfGhI");
        source.Disposals.Should().Be(1);
        new string(await before.ToArrayAsync()).Should().Be("ABC");
        // end doc
        source.Enumerators.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_Interleaved_AndPredicateNeverCalledAfterTheSplit(SourceMode mode)
    {
        int calls = 0;
        var source = Sources.Of(mode, 1, 2, 3, 10, 4, 20);
        var (before, after) = source.BeforeAndAfter(x => { calls++; return x < 5; });
        await using var b = before.GetAsyncEnumerator();
        await using var a = after.GetAsyncEnumerator();
        (await b.MoveNextAsync()).Should().BeTrue();
        b.Current.Should().Be(1);
        (await a.MoveNextAsync()).Should().BeTrue();
        a.Current.Should().Be(10);
        var restOfBefore = new List<int>();
        while (await b.MoveNextAsync())
        {
            restOfBefore.Add(b.Current);
        }

        restOfBefore.Should().Equal(2, 3);
        var restOfAfter = new List<int>();
        while (await a.MoveNextAsync())
        {
            restOfAfter.Add(a.Current);
        }

        restOfAfter.Should().Equal(4, 20);
        calls.Should().Be(4);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_AllPassOrNonePass(SourceMode mode)
    {
        var (allBefore, noneAfter) = Sources.Of(mode, 1, 2).BeforeAndAfter(x => true);
        (await allBefore.ToArrayAsync()).Should().Equal(1, 2);
        (await noneAfter.ToArrayAsync()).Should().BeEmpty();

        var (noneBefore, allAfter) = Sources.Of(mode, 1, 2).BeforeAndAfter(x => false);
        (await allAfter.ToArrayAsync()).Should().Equal(1, 2);
        (await noneBefore.ToArrayAsync()).Should().BeEmpty();
    }

    [Fact]
    public async Task BeforeAndAfter_IsDeferred_AndEachHalfIsSingleUse()
    {
        var source = Sources.Of(SourceMode.Synchronous, 1, 5);
        var (before, after) = source.BeforeAndAfter(x => x < 3);
        source.Enumerators.Should().Be(0);
        (await before.ToArrayAsync()).Should().Equal(1);
        Func<Task> again = async () => await before.ToArrayAsync();
        await again.Should().ThrowAsync<InvalidOperationException>();
        (await after.ToArrayAsync()).Should().Equal(5);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_BothHalvesDisposedEarly_DisposesTheSourceOnce(SourceMode mode)
    {
        var source = Sources.Endless(mode);
        var (before, after) = source.BeforeAndAfter(x => x < 1000);
        (await OperatorChecks.TakeThenBreakAsync(before, 2)).Should().Equal(0, 1);
        source.Disposals.Should().Be(0); // After may still be read.
        await after.GetAsyncEnumerator().DisposeAsync();
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_AfterReadPastDisposedBefore_DoesNotKeepItems(SourceMode mode)
    {
        var source = Sources.Of(mode, 1, 2, 3, 9, 8);
        var (before, after) = source.BeforeAndAfter(x => x < 5);
        await before.GetAsyncEnumerator().DisposeAsync();
        (await OperatorChecks.TakeThenBreakAsync(after, 1)).Should().Equal(9);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_SourceError_ReachesTheReaderAndLaterReaders_DisposedOnce(SourceMode mode)
    {
        var source = Sources.Failing(new[] { 1, 2, 3 }, failAt: 2, mode);
        var (before, after) = source.BeforeAndAfter(x => x < 10);
        (await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(before)).Should().Equal(1, 2);
        await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(after);
        source.Disposals.Should().Be(1);

        var throwingPredicate = Sources.Of(mode, 1, 2, 3);
        var (b2, a2) = throwingPredicate.BeforeAndAfter(x => x == 2 ? throw new DivideByZeroException() : true);
        await OperatorChecks.CollectExpectingFailureAsync<int, DivideByZeroException>(a2);
        (await OperatorChecks.CollectExpectingFailureAsync<int, DivideByZeroException>(b2)).Should().Equal(1);
        throwingPredicate.Disposals.Should().Be(1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task BeforeAndAfter_TheSourcesDisposalFailingAtItsEnd_IsReportedToBothHalves(bool afterFirst)
    {
        var failure = new InvalidDataException("dispose failure");
        var source = new TrackingSource<int>([1, 2]) { DisposeFailure = failure }; // every item passes: the source's end is read
        var (before, after) = source.BeforeAndAfter(x => x < 3);

        await FluentActions.Awaiting(() => (afterFirst ? after : before).ToListAsync().AsTask().WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<InvalidDataException>();
        await FluentActions.Awaiting(() => (afterFirst ? before : after).ToListAsync().AsTask().WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<InvalidDataException>("the shared enumeration failed: the other half does not end as if the source had ended");
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task BeforeAndAfter_ASourceWhoseReadAndThenDisposalFail_ReportsTheDisposalsFailureToBothHalves()
    {
        var source = new TrackingSource<int>([1, 2, 3], SourceMode.Synchronous, failAt: 1, failure: new FormatException("read failure"))
        {
            DisposeFailure = new InvalidDataException("dispose failure"),
        };
        var (before, after) = source.BeforeAndAfter(x => x < 3);

        await FluentActions.Awaiting(() => before.ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidDataException>();
        await FluentActions.Awaiting(() => after.ToListAsync().AsTask().WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<InvalidDataException>("one shared enumeration failed once, as an await foreach over the source would");
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_Cancellation_ReachesTheSourceAndDisposesIt(SourceMode mode)
    {
        var source = Sources.Endless(mode);
        var (before, after) = source.BeforeAndAfter(x => true);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(before, after: 2);
        source.LastToken.Should().Be(token);
        source.Disposals.Should().Be(1);
        await OperatorChecks.CollectExpectingFailureAsync<int, OperationCanceledException>(after);
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task BeforeAndAfter_HalvesReadConcurrently_SeeEveryItemOnce()
    {
        for (int round = 0; round < 20; round++)
        {
            var source = Sources.From(Enumerable.Range(0, 200), SourceMode.Yielding);
            var (before, after) = source.BeforeAndAfter(x => x < 120);
            Task<int[]> b = Task.Run(async () => await before.ToArrayAsync());
            Task<int[]> a = Task.Run(async () => await after.ToArrayAsync());
            (await b).Should().Equal(Enumerable.Range(0, 120));
            (await a).Should().Equal(Enumerable.Range(120, 80));
            source.Disposals.Should().Be(1);
        }
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task BeforeAndAfter_KeptItemsAndThePivot_AreNotHandedToAHalfWhoseTokenIsCancelled(SourceMode mode)
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        var (before, after) = Sources.From("ABCdE", mode).BeforeAndAfter(char.IsUpper);
        new string(await after.ToArrayAsync()).Should().Be("dE"); // keeps A, B and C for Before
        await using (IAsyncEnumerator<char> b = before.GetAsyncEnumerator(cts.Token))
        {
            await FluentActions.Awaiting(async () => await b.MoveNextAsync()).Should().ThrowAsync<OperationCanceledException>();
        }

        var (before2, after2) = Sources.From("ABcD", mode).BeforeAndAfter(char.IsUpper);
        new string(await before2.ToArrayAsync()).Should().Be("AB"); // read the pivot 'c' for After
        await using IAsyncEnumerator<char> a = after2.GetAsyncEnumerator(cts.Token);
        await FluentActions.Awaiting(async () => await a.MoveNextAsync()).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task BeforeAndAfter_DisposingAnIdleHalf_DoesNotWaitForTheOtherHalfsPendingRead()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var reading = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var source = new TrackingSource<int>(new[] { 1, 2, 3, 9 }, SourceMode.Yielding);

        async IAsyncEnumerable<int> Gated()
        {
            await foreach (int x in source)
            {
                if (x == 9)
                {
                    reading.TrySetResult();
                    await gate.Task;
                }

                yield return x;
            }
        }

        var (before, after) = Gated().BeforeAndAfter(x => x < 5);
        IAsyncEnumerator<int> a = after.GetAsyncEnumerator();
        Task<bool> move = a.MoveNextAsync().AsTask(); // reads 1, 2, 3 (kept for Before), then waits for 9
        await reading.Task.WaitAsync(TestWork.Bound);

        await before.GetAsyncEnumerator().DisposeAsync().AsTask().WaitAsync(TestWork.Bound);
        move.IsCompleted.Should().BeFalse();

        gate.SetResult();
        (await move.WaitAsync(TestWork.Bound)).Should().BeTrue();
        a.Current.Should().Be(9);
        (await a.MoveNextAsync()).Should().BeFalse();
        source.Disposals.Should().Be(1);
        await a.DisposeAsync();
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task ASourceWhoseCurrentThrows_FailsBothHalves_AndIsDisposedAtOnce()
    {
        var failure = new FormatException("Current failed");
        var source = new HostileSource(Hostility.CurrentThrows, failure, at: 0, items: 5);
        var (before, after) = source.BeforeAndAfter(x => x < 3);
        await using IAsyncEnumerator<int> b = before.GetAsyncEnumerator();
        (await FluentActions.Awaiting(() => b.MoveNextAsync().AsTask()).Should().ThrowAsync<Exception>()).Which.Should().BeSameAs(failure);
        source.Disposals.Should().Be(1, "the source failed, so it is disposed at once");

        await using IAsyncEnumerator<int> a = after.GetAsyncEnumerator();
        (await FluentActions.Awaiting(() => a.MoveNextAsync().AsTask()).Should().ThrowAsync<Exception>()).Which.Should().BeSameAs(failure);
    }
}
