namespace AsyncIterTools.Tests;

public sealed class ProductTests
{
    private static async Task<int[][]> ReadAsync(IAsyncEnumerable<int[]> rows) => await rows.ToArrayAsync();

    [Fact]
    public void Product_InvalidArguments_ThrowAtCall()
    {
        var a = Sources.Of(SourceMode.Synchronous, 1);
        ((Action)(() => AsyncIter.Product<int, int>(null!, a))).Should().Throw<ArgumentNullException>().WithParameterName("first");
        ((Action)(() => AsyncIter.Product<int, int>(a, null!))).Should().Throw<ArgumentNullException>().WithParameterName("second");
        ((Action)(() => AsyncIter.Product<int>(null!))).Should().Throw<ArgumentNullException>().WithParameterName("sources");
        ((Action)(() => AsyncIter.Product([a], repeat: -1))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("repeat");
        a.Enumerators.Should().Be(0);
    }

    [Fact]
    public async Task Product_SequenceOfSources_IsReadWhenEnumerated_ANullElementThrowsArgumentNullThen()
    {
        var a = Sources.Of(SourceMode.Synchronous, 1);
        var sources = new TestWork.LazySequence<IAsyncEnumerable<int>>([a, null!]);
        IAsyncEnumerable<int[]> product = AsyncIter.Product(sources);
        sources.Pulled.Should().Be(0, "deferred: nothing is read at the call");

        Func<Task> act = async () => await product.ToArrayAsync();
        (await act.Should().ThrowExactlyAsync<ArgumentNullException>()).Which.ParamName.Should().Be("sources");
        sources.Disposals.Should().Be(1);
        a.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Product_EmptyCases_MatchPython(SourceMode mode)
    {
        // list(product([1], [])) == []
        (await AsyncIter.Product(Sources.Of(mode, 1), Sources.Of<int>(mode)).ToArrayAsync()).Should().BeEmpty();
        (await ReadAsync(AsyncIter.Product([Sources.Of(mode, 1), Sources.Of<int>(mode)]))).Should().BeEmpty();
        // list(product()) == [()]; list(product(repeat=0)) == [()]; list(product([1, 2], repeat=0)) == [()]
        (await ReadAsync(AsyncIter.Product(Array.Empty<IAsyncEnumerable<int>>()))).Should().ContainSingle().Which.Should().BeEmpty();
        (await ReadAsync(AsyncIter.Product(Array.Empty<IAsyncEnumerable<int>>(), repeat: 0))).Should().ContainSingle().Which.Should().BeEmpty();
        var unused = Sources.Of(mode, 1, 2);
        (await ReadAsync(AsyncIter.Product([unused], repeat: 0))).Should().ContainSingle().Which.Should().BeEmpty();
        unused.Enumerators.Should().Be(0);
    }

    [Fact]
    public async Task Product_RowsLongerThanAnArray_AreRefusedNamingRepeat_NeverWrapped()
    {
        // 4 * 2^30 wraps to 0 in 32 bits, which would have been the single empty row of repeat: 0.
        var unused = Sources.Of(SourceMode.Synchronous, 1);
        await FluentActions.Awaiting(() => ReadAsync(AsyncIter.Product([unused, unused, unused, unused], repeat: 1 << 30)))
            .Should().ThrowAsync<ArgumentOutOfRangeException>().WithParameterName("repeat");
        unused.Enumerators.Should().Be(0);
    }

    [Fact]
    public async Task Product_RowsWithinIntButLongerThanAnArrayCanBe_AreRefusedBeforeAnySourceIsRead()
    {
        // int.MaxValue fits an int but not an array (Array.MaxLength is 2,147,483,591): refused, not an
        // OutOfMemoryException after reading every source.
        var unused = Sources.Of(SourceMode.Synchronous, 1);
        await FluentActions.Awaiting(() => ReadAsync(AsyncIter.Product([unused], repeat: int.MaxValue)))
            .Should().ThrowAsync<ArgumentOutOfRangeException>().WithParameterName("repeat");
        unused.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Product_Pair_MatchesPython(SourceMode mode)
    {
        // list(product([1, 2], 'ab')) == [(1, 'a'), (1, 'b'), (2, 'a'), (2, 'b')]
        (await AsyncIter.Product(Sources.Of(mode, 1, 2), Sources.From("ab", mode)).ToArrayAsync())
            .Should().Equal((1, 'a'), (1, 'b'), (2, 'a'), (2, 'b'));
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Product_Many_MatchesPython(SourceMode mode)
    {
        // list(product([1, 2], [3, 4], [5])) == [(1, 3, 5), (1, 4, 5), (2, 3, 5), (2, 4, 5)]
        (await ReadAsync(AsyncIter.Product([Sources.Of(mode, 1, 2), Sources.Of(mode, 3, 4), Sources.Of(mode, 5)])))
            .Should().BeEquivalentTo(new[] { new[] { 1, 3, 5 }, [1, 4, 5], [2, 3, 5], [2, 4, 5] }, o => o.WithStrictOrdering());
        // list(product([0, 1], repeat=2)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        (await ReadAsync(AsyncIter.Product([Sources.Of(mode, 0, 1)], repeat: 2)))
            .Should().BeEquivalentTo(new[] { new[] { 0, 0 }, [0, 1], [1, 0], [1, 1] }, o => o.WithStrictOrdering());
        // doc: asynciter-product
        // list(product([1, 2], [3], repeat=2)) == [(1, 3, 1, 3), (1, 3, 2, 3), (2, 3, 1, 3), (2, 3, 2, 3)]
        (await ReadAsync(AsyncIter.Product([Sources.Of(mode, 1, 2), Sources.Of(mode, 3)], repeat: 2)))
            .Should().BeEquivalentTo(new[] { new[] { 1, 3, 1, 3 }, [1, 3, 2, 3], [2, 3, 1, 3], [2, 3, 2, 3] }, o => o.WithStrictOrdering());
        // end doc
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Product_MatchesLinqOracle_AndEnumeratesEachSourceOnce(SourceMode mode)
    {
        int[][] pools = [[1, 2, 3], [4, 5], [6, 7, 8, 9]];
        var expected = (from a in pools[0] from b in pools[1] from c in pools[2] select new[] { a, b, c }).ToArray();
        TrackingSource<int>[] sources = [.. pools.Select(p => Sources.From(p, mode))];
        (await ReadAsync(AsyncIter.Product(sources))).Should().BeEquivalentTo(expected, o => o.WithStrictOrdering());
        sources.Should().AllSatisfy(s => s.Enumerators.Should().Be(1));
        sources.Should().AllSatisfy(s => s.Disposals.Should().Be(1));
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Product_FirstSourceIsStreamed_AndSkippedWhenAnotherIsEmpty(SourceMode mode)
    {
        var endless = Sources.Endless(mode);
        (await AsyncIter.Product(endless, Sources.From("xy", mode)).Take(5).ToArrayAsync())
            .Should().Equal((0, 'x'), (0, 'y'), (1, 'x'), (1, 'y'), (2, 'x'));
        endless.Produced.Should().Be(3);
        endless.Disposals.Should().Be(1);

        var first = Sources.Of(mode, 1, 2);
        var empty = Sources.Of<int>(mode);
        var after = Sources.Of(mode, 3);
        (await ReadAsync(AsyncIter.Product([first, empty, after]))).Should().BeEmpty();
        first.Enumerators.Should().Be(0);
        empty.Enumerators.Should().Be(1);
        after.Enumerators.Should().Be(0, "reading stops at the first empty source");
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Product_BreakErrorAndCancellation_DisposeOnce(SourceMode mode)
    {
        var a = Sources.Of(mode, 1, 2, 3);
        var b = Sources.Of(mode, 1, 2);
        (await OperatorChecks.TakeThenBreakAsync(AsyncIter.Product([a, b]), 3)).Should().HaveCount(3);
        a.Disposals.Should().Be(1);
        b.Disposals.Should().Be(1);

        var failingLater = Sources.Failing(new[] { 1, 2 }, failAt: 1, mode);
        var ok = Sources.Of(mode, 1, 2);
        await OperatorChecks.CollectExpectingFailureAsync<(int, int), InvalidOperationException>(AsyncIter.Product(ok, failingLater));
        failingLater.Disposals.Should().Be(1);
        ok.Enumerators.Should().Be(0);

        var failingFirst = Sources.Failing(new[] { 1, 2 }, failAt: 1, mode);
        var pool = Sources.Of(mode, 7);
        (await OperatorChecks.CollectExpectingFailureAsync<int[], InvalidOperationException>(AsyncIter.Product([failingFirst, pool]))).Should().HaveCount(1);
        failingFirst.Disposals.Should().Be(1);
        pool.Disposals.Should().Be(1);

        var streamed = Sources.Endless(mode);
        var inner = Sources.Of(mode, 1, 2);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(AsyncIter.Product(streamed, inner), after: 3);
        streamed.LastToken.Should().Be(token);
        inner.LastToken.Should().Be(token);
        streamed.Disposals.Should().Be(1);
        inner.Disposals.Should().Be(1);

        // Fully buffered (repeat > 1): the operator checks the token between rows.
        var buffered = Sources.Of(mode, 1, 2, 3);
        await OperatorChecks.CancelAfterAsync(AsyncIter.Product([buffered], repeat: 3), after: 2);
        buffered.Disposals.Should().Be(1);
    }
}
