namespace AsyncIterTools.Tests;

public sealed class FlattenTests
{
    [Fact]
    public void Flatten_NullSource_ThrowsAtCall()
    {
        ((Action)(() => ((IAsyncEnumerable<IAsyncEnumerable<int>>)null!).Flatten())).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => ((IAsyncEnumerable<IEnumerable<int>>)null!).Flatten())).Should().Throw<ArgumentNullException>().WithParameterName("source");
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Flatten_Empty_IsEmpty(SourceMode mode)
    {
        (await Sources.Of<IAsyncEnumerable<int>>(mode).Flatten().ToArrayAsync()).Should().BeEmpty();
        (await Sources.Of<int[]>(mode).Flatten().ToArrayAsync()).Should().BeEmpty();
        (await Sources.Of(mode, Array.Empty<int>(), []).Flatten().ToArrayAsync()).Should().BeEmpty();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Flatten_AsyncInners_ConcatenatesAndDisposesEachOnce(SourceMode mode)
    {
        // list(chain.from_iterable([[1, 2], [], [3]])) == [1, 2, 3]
        TrackingSource<int>[] inners = [Sources.Of(mode, 1, 2), Sources.Of<int>(mode), Sources.Of(mode, 3)];
        var outer = Sources.From<IAsyncEnumerable<int>>(inners, mode);
        (await outer.Flatten().ToArrayAsync()).Should().Equal(1, 2, 3);
        outer.Disposals.Should().Be(1);
        inners.Should().AllSatisfy(s => s.Disposals.Should().Be(1));
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Flatten_SyncInners_ConcatenatesArraysListsAndStrings(SourceMode mode)
    {
        (await Sources.Of(mode, new[] { 1, 2 }, [], [3]).Flatten().ToArrayAsync()).Should().Equal(1, 2, 3);
        (await Sources.Of<List<int>>(mode, [1], [2, 3]).Flatten().ToArrayAsync()).Should().Equal(1, 2, 3);
        // doc: asynciter-flatten
        // list(chain.from_iterable(['ab', 'c'])) == ['a', 'b', 'c']
        (await Sources.Of(mode, "ab", "c").Flatten().ToArrayAsync()).Should().Equal('a', 'b', 'c');
        // end doc
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Flatten_Break_DisposesOuterAndCurrentInner(SourceMode mode)
    {
        TrackingSource<int>[] inners = [Sources.Of(mode, 1, 2), Sources.Of(mode, 3)];
        var outer = Sources.From<IAsyncEnumerable<int>>(inners, mode);
        (await OperatorChecks.TakeThenBreakAsync(outer.Flatten(), 1)).Should().Equal(1);
        outer.Disposals.Should().Be(1);
        outer.Produced.Should().Be(1);
        inners[0].Disposals.Should().Be(1);
        inners[1].Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Flatten_InnerOrOuterError_PropagatesAndDisposes(SourceMode mode)
    {
        var badInner = Sources.Failing(new[] { 1, 2 }, failAt: 1, mode);
        var outer = Sources.From<IAsyncEnumerable<int>>([badInner, Sources.Of(mode, 9)], mode);
        (await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(outer.Flatten())).Should().Equal(1);
        badInner.Disposals.Should().Be(1);
        outer.Disposals.Should().Be(1);

        var badOuter = Sources.Failing(new[] { new[] { 1 }, [2] }, failAt: 1, mode);
        (await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(badOuter.Flatten())).Should().Equal(1);
        badOuter.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task Flatten_NullInner_ThrowsArgumentNullWhenReached()
    {
        var outer = Sources.Of(SourceMode.Synchronous, new[] { 1 }, null!);
        (await OperatorChecks.CollectExpectingFailureAsync<int, ArgumentNullException>(outer.Flatten())).Should().Equal(1);
        outer.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Flatten_Cancellation_ReachesOuterAndInner(SourceMode mode)
    {
        var inner = Sources.Endless(mode);
        var outer = Sources.From<IAsyncEnumerable<int>>([inner], mode);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(outer.Flatten(), after: 2);
        outer.LastToken.Should().Be(token);
        inner.LastToken.Should().Be(token);
        inner.Disposals.Should().Be(1);
        outer.Disposals.Should().Be(1);

        var syncOuter = Sources.Of<int[]>(mode, Enumerable.Range(0, 100).ToArray());
        await OperatorChecks.CancelAfterAsync(syncOuter.Flatten(), after: 2);
        syncOuter.Disposals.Should().Be(1);
    }
}
