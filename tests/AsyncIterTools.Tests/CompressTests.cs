namespace AsyncIterTools.Tests;

public sealed class CompressTests
{
    [Fact]
    public void Compress_NullArguments_ThrowAtCall()
    {
        var flags = Sources.Of(SourceMode.Synchronous, true);
        ((Action)(() => ((IAsyncEnumerable<int>)null!).Compress(flags))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => Sources.Of(SourceMode.Synchronous, 1).Compress(null!))).Should().Throw<ArgumentNullException>().WithParameterName("selectors");
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Compress_Empty_IsEmpty(SourceMode mode)
    {
        (await Sources.Of<int>(mode).Compress(Sources.Of(mode, true, true)).ToArrayAsync()).Should().BeEmpty();
        (await Sources.Of(mode, 1, 2).Compress(Sources.Of<bool>(mode)).ToArrayAsync()).Should().BeEmpty();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Compress_MatchesPython(SourceMode mode)
    {
        // doc: asynciter-compress
        // list(compress('ABCDEF', [1, 0, 1, 0, 1, 1])) == ['A', 'C', 'E', 'F']
        (await Sources.From("ABCDEF", mode).Compress(Sources.Of(mode, true, false, true, false, true, true)).ToArrayAsync())
            .Should().Equal('A', 'C', 'E', 'F');
        // end doc
        // list(compress('ABCDEF', [1, 0, 1])) == ['A', 'C']  (selectors end first)
        (await Sources.From("ABCDEF", mode).Compress(Sources.Of(mode, true, false, true)).ToArrayAsync()).Should().Equal('A', 'C');
        // list(compress('ABC', [1, 1, 1, 1, 1])) == ['A', 'B', 'C']  (data ends first)
        (await Sources.From("ABC", mode).Compress(Sources.Of(mode, true, true, true, true, true)).ToArrayAsync()).Should().Equal('A', 'B', 'C');
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Compress_DataEndsFirst_DoesNotReadFurtherSelectorsAndDisposesBoth(SourceMode mode)
    {
        var data = Sources.Of(mode, 1, 2);
        var flags = Sources.Of(mode, true, true, true, true);
        (await data.Compress(flags).ToArrayAsync()).Should().Equal(1, 2);
        flags.Produced.Should().Be(2);
        data.Disposals.Should().Be(1);
        flags.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Compress_BreakErrorAndCancellation_DisposeBothOnce(SourceMode mode)
    {
        var data = Sources.Endless(mode);
        var flags = new TrackingSource<bool>(Enumerable.Repeat(true, 100), mode);
        (await OperatorChecks.TakeThenBreakAsync(data.Compress(flags), 2)).Should().Equal(0, 1);
        data.Disposals.Should().Be(1);
        flags.Disposals.Should().Be(1);

        var failingFlags = Sources.Failing(new[] { true, true }, failAt: 1, mode);
        var data2 = Sources.Of(mode, 1, 2, 3);
        (await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(data2.Compress(failingFlags))).Should().Equal(1);
        data2.Disposals.Should().Be(1);
        failingFlags.Disposals.Should().Be(1);

        var data3 = Sources.Endless(mode);
        var flags3 = new TrackingSource<bool>(Enumerable.Repeat(true, 100), mode);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(data3.Compress(flags3), after: 1);
        data3.LastToken.Should().Be(token);
        flags3.LastToken.Should().Be(token);
        data3.Disposals.Should().Be(1);
        flags3.Disposals.Should().Be(1);
    }
}
