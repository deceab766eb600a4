namespace AsyncIterTools.Tests;

public sealed class CombinationsTests
{
    [Fact]
    public void Combinations_InvalidArguments_ThrowAtCall()
    {
        ((Action)(() => ((IAsyncEnumerable<int>)null!).Combinations(1))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        var source = Sources.Of(SourceMode.Synchronous, 1);
        ((Action)(() => source.Combinations(-1))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("length");
        source.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Combinations_EdgeCases_MatchPython(SourceMode mode)
    {
        // list(combinations([], 0)) == [()]
        (await Sources.Of<int>(mode).Combinations(0).ToArrayAsync()).Should().ContainSingle().Which.Should().BeEmpty();
        // list(combinations([1, 2], 0)) == [()]
        (await Sources.Of(mode, 1, 2).Combinations(0).ToArrayAsync()).Should().ContainSingle().Which.Should().BeEmpty();
        // list(combinations([1, 2], 3)) == []
        (await Sources.Of(mode, 1, 2).Combinations(3).ToArrayAsync()).Should().BeEmpty();
        (await Sources.Of<int>(mode).Combinations(1).ToArrayAsync()).Should().BeEmpty();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Combinations_MatchPython(SourceMode mode)
    {
        // [''.join(c) for c in combinations('ABCD', 2)] == ['AB', 'AC', 'AD', 'BC', 'BD', 'CD']
        (await Sources.From("ABCD", mode).Combinations(2).Select(c => new string(c)).ToArrayAsync())
            .Should().Equal("AB", "AC", "AD", "BC", "BD", "CD");
        // list(combinations(range(4), 3)) == [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
        (await Sources.From(Enumerable.Range(0, 4), mode).Combinations(3).ToArrayAsync())
            .Should().BeEquivalentTo(new[] { new[] { 0, 1, 2 }, [0, 1, 3], [0, 2, 3], [1, 2, 3] }, o => o.WithStrictOrdering());
    }

    [Theory]
    [InlineData(6, 3)]
    [InlineData(5, 5)]
    [InlineData(5, 1)]
    [InlineData(7, 2)]
    public async Task Combinations_MatchBruteForceOracle(int n, int r)
    {
        int[][] expected = CombinatoricsOracle.IndexTuples(n, r, CombinatoricsOracle.StrictlyIncreasing);
        (await Sources.From(Enumerable.Range(0, n)).Combinations(r).ToArrayAsync()).Should().BeEquivalentTo(expected, o => o.WithStrictOrdering());
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Combinations_ReadsSourceOnce_AndDisposesOnBreakErrorAndCancellation(SourceMode mode)
    {
        var source = Sources.Of(mode, 1, 2, 3);
        (await OperatorChecks.TakeThenBreakAsync(source.Combinations(2), 1)).Should().HaveCount(1);
        source.Enumerators.Should().Be(1);
        source.Disposals.Should().Be(1);

        var failing = Sources.Failing(new[] { 1, 2, 3 }, failAt: 1, mode);
        await OperatorChecks.CollectExpectingFailureAsync<int[], InvalidOperationException>(failing.Combinations(1));
        failing.Disposals.Should().Be(1);

        var cancelled = Sources.Of(mode, 1, 2, 3, 4);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(cancelled.Combinations(2), after: 2);
        cancelled.LastToken.Should().Be(token);
        cancelled.Disposals.Should().Be(1);
    }
}
