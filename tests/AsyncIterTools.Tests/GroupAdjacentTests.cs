namespace AsyncIterTools.Tests;

public sealed class GroupAdjacentTests
{
    private static async Task<List<(TKey Key, T[] Items)>> ReadGroupsAsync<TKey, T>(IAsyncEnumerable<IGrouping<TKey, T>> groups)
    {
        var result = new List<(TKey, T[])>();
        await foreach (IGrouping<TKey, T> group in groups)
        {
            result.Add((group.Key, group.ToArray()));
        }

        return result;
    }

    [Fact]
    public void GroupAdjacent_NullArguments_ThrowAtCall()
    {
        IAsyncEnumerable<int> nil = null!;
        var source = Sources.Of(SourceMode.Synchronous, 1);
        ((Action)(() => nil.GroupAdjacent(x => x))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => nil.GroupAdjacent((x, ct) => ValueTask.FromResult(x)))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => source.GroupAdjacent((Func<int, int>)null!))).Should().Throw<ArgumentNullException>().WithParameterName("keySelector");
        ((Action)(() => source.GroupAdjacent((Func<int, CancellationToken, ValueTask<int>>)null!))).Should().Throw<ArgumentNullException>().WithParameterName("keySelector");
        source.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task GroupAdjacent_Empty_IsEmpty(SourceMode mode)
    {
        (await Sources.Of<int>(mode).GroupAdjacent(x => x).ToArrayAsync()).Should().BeEmpty();
        (await Sources.Of<int>(mode).GroupAdjacent((x, ct) => ValueTask.FromResult(x)).ToArrayAsync()).Should().BeEmpty();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task GroupAdjacent_MatchesPython(SourceMode mode)
    {
        // doc: asynciter-groupadjacent
        // [(k, list(g)) for k, g in groupby('AAAABBBCCDAABBB')]
        var groups = await ReadGroupsAsync(Sources.From("AAAABBBCCDAABBB", mode).GroupAdjacent(c => c));
        groups.Select(g => (g.Key, new string(g.Items))).Should().Equal(
            ('A', "AAAA"), ('B', "BBB"), ('C', "CC"), ('D', "D"), ('A', "AA"), ('B', "BBB"));
        // end doc

        // [(k, list(g)) for k, g in groupby([1, 3, 2, 4, 6, 5, 7], lambda x: x % 2)] == [(1, [1, 3]), (0, [2, 4, 6]), (1, [5, 7])]
        var parity = await ReadGroupsAsync(Sources.Of(mode, 1, 3, 2, 4, 6, 5, 7).GroupAdjacent(async (x, ct) =>
        {
            await Task.Yield();
            return x % 2;
        }));
        parity.Select(g => g.Key).Should().Equal(1, 0, 1);
        parity.Select(g => g.Items).Should().BeEquivalentTo(new[] { new[] { 1, 3 }, [2, 4, 6], [5, 7] }, o => o.WithStrictOrdering());
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task GroupAdjacent_KeyIsTheFirstItemsKey_UnderTheComparer(SourceMode mode)
    {
        var groups = await ReadGroupsAsync(Sources.Of(mode, "a", "A", "b", "B", "a").GroupAdjacent(s => s, StringComparer.OrdinalIgnoreCase));
        groups.Select(g => g.Key).Should().Equal("a", "b", "a");
        groups.Select(g => g.Items.Length).Should().Equal(2, 2, 1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task GroupAdjacent_GroupsStayValidAndAreReadOnlyLists(SourceMode mode)
    {
        var groups = await Sources.Of(mode, 1, 1, 2).GroupAdjacent(x => x).ToArrayAsync();
        groups.Should().HaveCount(2);
        var first = groups[0].Should().BeAssignableTo<IReadOnlyList<int>>().Subject;
        first.Count.Should().Be(2);
        first[1].Should().Be(1);
        groups[1].Should().Equal(2);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task GroupAdjacent_BreakErrorAndCancellation_DisposeOnce(SourceMode mode)
    {
        var endless = Sources.Endless(mode);
        var firstTwo = await OperatorChecks.TakeThenBreakAsync(endless.GroupAdjacent(x => x / 3), 2);
        firstTwo.Select(g => g.ToArray()).Should().BeEquivalentTo(new[] { new[] { 0, 1, 2 }, [3, 4, 5] }, o => o.WithStrictOrdering());
        endless.Disposals.Should().Be(1);

        var failing = Sources.Failing(new[] { 1, 1, 2, 2 }, failAt: 3, mode);
        (await OperatorChecks.CollectExpectingFailureAsync<IGrouping<int, int>, InvalidOperationException>(failing.GroupAdjacent(x => x)))
            .Select(g => g.Key).Should().Equal(1);
        failing.Disposals.Should().Be(1);

        var throwingKey = Sources.Of(mode, 1, 2, 3);
        (await OperatorChecks.CollectExpectingFailureAsync<IGrouping<int, int>, DivideByZeroException>(throwingKey.GroupAdjacent(x => 6 / (3 - x))))
            .Select(g => g.Key).Should().Equal(3);
        throwingKey.Disposals.Should().Be(1);

        var cancelled = Sources.Endless(mode);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(cancelled.GroupAdjacent((x, ct) => ValueTask.FromResult(x / 2)), after: 2);
        cancelled.LastToken.Should().Be(token);
        cancelled.Disposals.Should().Be(1);
    }
}
