namespace AsyncIterTools.Tests;

public sealed class CombinationsWithReplacementTests
{
    [Fact]
    public void CombinationsWithReplacement_InvalidArguments_ThrowAtCall()
    {
        ((Action)(() => ((IAsyncEnumerable<int>)null!).CombinationsWithReplacement(1))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        var source = Sources.Of(SourceMode.Synchronous, 1);
        ((Action)(() => source.CombinationsWithReplacement(-1))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("length");
        source.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task CombinationsWithReplacement_EdgeCases_MatchPython(SourceMode mode)
    {
        // list(combinations_with_replacement([], 2)) == []
        (await Sources.Of<int>(mode).CombinationsWithReplacement(2).ToArrayAsync()).Should().BeEmpty();
        // list(combinations_with_replacement([], 0)) == [()]
        (await Sources.Of<int>(mode).CombinationsWithReplacement(0).ToArrayAsync()).Should().ContainSingle().Which.Should().BeEmpty();
        // list(combinations_with_replacement([1, 2], 0)) == [()]
        (await Sources.Of(mode, 1, 2).CombinationsWithReplacement(0).ToArrayAsync()).Should().ContainSingle().Which.Should().BeEmpty();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task CombinationsWithReplacement_MatchPython(SourceMode mode)
    {
        // [''.join(c) for c in combinations_with_replacement('ABC', 2)] == ['AA', 'AB', 'AC', 'BB', 'BC', 'CC']
        (await Sources.From("ABC", mode).CombinationsWithReplacement(2).Select(c => new string(c)).ToArrayAsync())
            .Should().Equal("AA", "AB", "AC", "BB", "BC", "CC");
        // list(combinations_with_replacement([1, 2, 3], 3))
        (await Sources.Of(mode, 1, 2, 3).CombinationsWithReplacement(3).ToArrayAsync()).Should().BeEquivalentTo(
            new[] { new[] { 1, 1, 1 }, [1, 1, 2], [1, 1, 3], [1, 2, 2], [1, 2, 3], [1, 3, 3], [2, 2, 2], [2, 2, 3], [2, 3, 3], [3, 3, 3] },
            o => o.WithStrictOrdering());
        // r may exceed n: list(combinations_with_replacement([7], 3)) == [(7, 7, 7)]
        (await Sources.Of(mode, 7).CombinationsWithReplacement(3).ToArrayAsync()).Should().ContainSingle().Which.Should().Equal(7, 7, 7);
    }

    [Theory]
    [InlineData(4, 3)]
    [InlineData(3, 5)]
    [InlineData(5, 1)]
    public async Task CombinationsWithReplacement_MatchBruteForceOracle(int n, int r)
    {
        int[][] expected = CombinatoricsOracle.IndexTuples(n, r, CombinatoricsOracle.NonDecreasing);
        (await Sources.From(Enumerable.Range(0, n)).CombinationsWithReplacement(r).ToArrayAsync()).Should().BeEquivalentTo(expected, o => o.WithStrictOrdering());
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task CombinationsWithReplacement_ReadsSourceOnce_AndDisposesOnBreakErrorAndCancellation(SourceMode mode)
    {
        var source = Sources.Of(mode, 1, 2, 3);
        (await OperatorChecks.TakeThenBreakAsync(source.CombinationsWithReplacement(2), 2)).Should().HaveCount(2);
        source.Enumerators.Should().Be(1);
        source.Disposals.Should().Be(1);

        var failing = Sources.Failing(new[] { 1, 2, 3 }, failAt: 1, mode);
        await OperatorChecks.CollectExpectingFailureAsync<int[], InvalidOperationException>(failing.CombinationsWithReplacement(2));
        failing.Disposals.Should().Be(1);

        var cancelled = Sources.Of(mode, 1, 2);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(cancelled.CombinationsWithReplacement(4), after: 2);
        cancelled.LastToken.Should().Be(token);
        cancelled.Disposals.Should().Be(1);
    }
}
