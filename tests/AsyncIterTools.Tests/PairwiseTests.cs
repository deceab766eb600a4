namespace AsyncIterTools.Tests;

public sealed class PairwiseTests
{
    [Fact]
    public void Pairwise_NullSource_ThrowsAtCall()
    {
        ((Action)(() => ((IAsyncEnumerable<int>)null!).Pairwise())).Should().Throw<ArgumentNullException>().WithParameterName("source");
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Pairwise_FewerThanTwoItems_IsEmpty(SourceMode mode)
    {
        (await Sources.Of<int>(mode).Pairwise().ToArrayAsync()).Should().BeEmpty();
        (await Sources.Of(mode, 1).Pairwise().ToArrayAsync()).Should().BeEmpty();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Pairwise_MatchesPython(SourceMode mode)
    {
        // doc: asynciter-pairwise
        // list(pairwise('ABCDEFG'))
        var source = Sources.From("ABCDEFG", mode);
        (await source.Pairwise().ToArrayAsync()).Should().Equal(
            ('A', 'B'), ('B', 'C'), ('C', 'D'), ('D', 'E'), ('E', 'F'), ('F', 'G'));
        // end doc
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Pairwise_NamedElements_AreInOrder(SourceMode mode)
    {
        var deltas = new List<int>();
        await foreach (var (previous, current) in Sources.Of(mode, 1, 4, 9, 16).Pairwise())
        {
            deltas.Add(current - previous);
        }

        deltas.Should().Equal(3, 5, 7);
        (await Sources.Of(mode, 1, 2).Pairwise().FirstAsync()).Previous.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Pairwise_BreakErrorAndCancellation_DisposeOnce(SourceMode mode)
    {
        var endless = Sources.Endless(mode);
        (await OperatorChecks.TakeThenBreakAsync(endless.Pairwise(), 2)).Should().Equal((0, 1), (1, 2));
        endless.Disposals.Should().Be(1);
        endless.Produced.Should().Be(3);

        var failing = Sources.Failing(new[] { 1, 2, 3 }, failAt: 2, mode);
        (await OperatorChecks.CollectExpectingFailureAsync<(int, int), InvalidOperationException>(failing.Pairwise())).Should().Equal((1, 2));
        failing.Disposals.Should().Be(1);

        var cancelled = Sources.Endless(mode);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(cancelled.Pairwise(), after: 2);
        cancelled.LastToken.Should().Be(token);
        cancelled.Disposals.Should().Be(1);
    }
}
