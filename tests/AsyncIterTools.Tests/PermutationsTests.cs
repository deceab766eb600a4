namespace AsyncIterTools.Tests;

public sealed class PermutationsTests
{
    [Fact]
    public void Permutations_InvalidArguments_ThrowAtCall()
    {
        ((Action)(() => ((IAsyncEnumerable<int>)null!).Permutations())).Should().Throw<ArgumentNullException>().WithParameterName("source");
        var source = Sources.Of(SourceMode.Synchronous, 1);
        ((Action)(() => source.Permutations(-1))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("length");
        source.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Permutations_EdgeCases_MatchPython(SourceMode mode)
    {
        // list(permutations([])) == [()]
        (await Sources.Of<int>(mode).Permutations().ToArrayAsync()).Should().ContainSingle().Which.Should().BeEmpty();
        // list(permutations([1, 2], 0)) == [()]
        (await Sources.Of(mode, 1, 2).Permutations(0).ToArrayAsync()).Should().ContainSingle().Which.Should().BeEmpty();
        // list(permutations([1, 2], 3)) == []
        (await Sources.Of(mode, 1, 2).Permutations(3).ToArrayAsync()).Should().BeEmpty();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Permutations_MatchPython(SourceMode mode)
    {
        // list(permutations([1, 2, 3])) == [(1, 2, 3), (1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1)]
        (await Sources.Of(mode, 1, 2, 3).Permutations().ToArrayAsync()).Should().BeEquivalentTo(
            new[] { new[] { 1, 2, 3 }, [1, 3, 2], [2, 1, 3], [2, 3, 1], [3, 1, 2], [3, 2, 1] }, o => o.WithStrictOrdering());
        // [''.join(p) for p in permutations('ABCD', 2)]
        (await Sources.From("ABCD", mode).Permutations(2).Select(p => new string(p)).ToArrayAsync()).Should().Equal(
            "AB", "AC", "AD", "BA", "BC", "BD", "CA", "CB", "CD", "DA", "DB", "DC");
        // Items are distinguished by position: list(permutations([1, 1])) == [(1, 1), (1, 1)]
        (await Sources.Of(mode, 1, 1).Permutations().CountAsync()).Should().Be(2);
    }

    [Theory]
    [InlineData(5, 3)]
    [InlineData(5, 5)]
    [InlineData(4, 1)]
    [InlineData(6, 4)]
    public async Task Permutations_MatchBruteForceOracle(int n, int r)
    {
        int[][] expected = CombinatoricsOracle.IndexTuples(n, r, CombinatoricsOracle.AllDistinct);
        (await Sources.From(Enumerable.Range(0, n)).Permutations(r).ToArrayAsync()).Should().BeEquivalentTo(expected, o => o.WithStrictOrdering());
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Permutations_ReadsSourceOnce_AndDisposesOnBreakErrorAndCancellation(SourceMode mode)
    {
        var source = Sources.Of(mode, 1, 2, 3);
        (await OperatorChecks.TakeThenBreakAsync(source.Permutations(), 2)).Should().HaveCount(2);
        source.Enumerators.Should().Be(1);
        source.Disposals.Should().Be(1);

        var failing = Sources.Failing(new[] { 1, 2, 3 }, failAt: 2, mode);
        (await OperatorChecks.CollectExpectingFailureAsync<int[], InvalidOperationException>(failing.Permutations())).Should().BeEmpty();
        failing.Disposals.Should().Be(1);

        var cancelled = Sources.Of(mode, 1, 2, 3, 4);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(cancelled.Permutations(2), after: 1);
        cancelled.LastToken.Should().Be(token);
        cancelled.Disposals.Should().Be(1);

        var preCancelled = Sources.Of(mode, 1, 2);
        await OperatorChecks.CancelAfterAsync(preCancelled.Permutations(), after: 0);
        preCancelled.Disposals.Should().Be(preCancelled.Enumerators);
    }
}
