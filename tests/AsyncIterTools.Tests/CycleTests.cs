namespace AsyncIterTools.Tests;

public sealed class CycleTests
{
    [Fact]
    public void Cycle_NullSource_ThrowsAtCall()
    {
        ((Action)(() => ((IAsyncEnumerable<int>)null!).Cycle())).Should().Throw<ArgumentNullException>().WithParameterName("source");
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Cycle_EmptySource_CompletesWithoutSpinning(SourceMode mode)
    {
        var source = Sources.Of<int>(mode);
        (await source.Cycle().ToArrayAsync()).Should().BeEmpty();
        source.Enumerators.Should().Be(1);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Cycle_MatchesPython_AndReadsTheSourceOnce(SourceMode mode)
    {
        // doc: asynciter-cycle
        // list(islice(cycle('ABC'), 8)) == ['A', 'B', 'C', 'A', 'B', 'C', 'A', 'B']
        var source = Sources.From("ABC", mode);
        (await source.Cycle().Take(8).ToArrayAsync()).Should().Equal('A', 'B', 'C', 'A', 'B', 'C', 'A', 'B');
        // end doc
        source.Enumerators.Should().Be(1);
        source.Produced.Should().Be(3);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Cycle_SourceIsDisposedAtTheEndOfTheFirstPass(SourceMode mode)
    {
        var source = Sources.Of(mode, 1, 2);
        var disposalsSeen = new List<int>();
        await foreach (int _ in source.Cycle())
        {
            disposalsSeen.Add(source.Disposals);
            if (disposalsSeen.Count == 4)
            {
                break;
            }
        }

        disposalsSeen.Should().Equal(0, 0, 1, 1);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Cycle_BreakErrorAndCancellation_DisposeOnce(SourceMode mode)
    {
        var endless = Sources.Endless(mode);
        (await OperatorChecks.TakeThenBreakAsync(endless.Cycle(), 2)).Should().Equal(0, 1);
        endless.Disposals.Should().Be(1);

        var failing = Sources.Failing(new[] { 1, 2 }, failAt: 1, mode);
        (await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(failing.Cycle())).Should().Equal(1);
        failing.Disposals.Should().Be(1);

        // Cancelled during the first pass: the token reached the source.
        var first = Sources.Endless(mode);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(first.Cycle(), after: 2);
        first.LastToken.Should().Be(token);
        first.Disposals.Should().Be(1);

        // Cancelled during replay, when the source is no longer read: the operator checks the token itself.
        var replayed = Sources.Of(mode, 1, 2);
        await OperatorChecks.CancelAfterAsync(replayed.Cycle(), after: 5);
        replayed.Disposals.Should().Be(1);
    }
}
