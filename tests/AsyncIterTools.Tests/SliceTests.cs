namespace AsyncIterTools.Tests;

public sealed class SliceTests
{
    [Fact]
    public void Slice_InvalidArguments_ThrowAtCallWithoutEnumerating()
    {
        var source = Sources.Of(SourceMode.Synchronous, 1, 2, 3);
        ((Action)(() => ((IAsyncEnumerable<int>)null!).Slice(1))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => ((IAsyncEnumerable<int>)null!).Slice(0, 1))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => source.Slice(-1))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("stop");
        ((Action)(() => source.Slice(-1, 2))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("start");
        ((Action)(() => source.Slice(0, -2))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("stop");
        ((Action)(() => source.Slice(0, 2, 0))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("step");
        ((Action)(() => source.Slice(0, null, -1))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("step");
        source.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Slice_EmptySource_IsEmpty(SourceMode mode)
    {
        var source = Sources.Of<int>(mode);
        (await source.Slice(3).ToArrayAsync()).Should().BeEmpty();
        (await source.Slice(1, null, 2).ToArrayAsync()).Should().BeEmpty();
        source.Disposals.Should().Be(2);
    }

    public static TheoryData<int, int?, int, int[]> PythonCases => new()
    {
        // list(islice(range(10), 2, None)) == [2, 3, 4, 5, 6, 7, 8, 9]
        { 2, null, 1, [2, 3, 4, 5, 6, 7, 8, 9] },
        // list(islice(range(10), 2, 8, 3)) == [2, 5]
        { 2, 8, 3, [2, 5] },
        // list(islice(range(10), 0, 10, 4)) == [0, 4, 8]
        { 0, 10, 4, [0, 4, 8] },
        // list(islice(range(10), 1, None, 2)) == [1, 3, 5, 7, 9]
        { 1, null, 2, [1, 3, 5, 7, 9] },
        // list(islice(range(10), 12, None)) == []
        { 12, null, 1, [] },
        // list(islice(range(10), 3, 3)) == []
        { 3, 3, 1, [] },
        // list(islice(range(10), 0, 0)) == []
        { 0, 0, 1, [] },
        // list(islice(range(10), 5, 100)) == [5, 6, 7, 8, 9]
        { 5, 100, 1, [5, 6, 7, 8, 9] },
    };

    [Theory, MemberData(nameof(PythonCases))]
    public async Task Slice_MatchesPython(int start, int? stop, int step, int[] expected)
    {
        foreach (SourceMode mode in new[] { SourceMode.Synchronous, SourceMode.Yielding })
        {
            var source = Sources.From(Enumerable.Range(0, 10), mode);
            (await source.Slice(start, stop, step).ToArrayAsync()).Should().Equal(expected);
            source.Disposals.Should().Be(source.Enumerators);
        }
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Slice_Stop_TakesThePrefix(SourceMode mode)
    {
        // list(islice(range(10), 5)) == [0, 1, 2, 3, 4]
        (await Sources.From(Enumerable.Range(0, 10), mode).Slice(5).ToArrayAsync()).Should().Equal(0, 1, 2, 3, 4);
        (await Sources.From(Enumerable.Range(0, 3), mode).Slice(5).ToArrayAsync()).Should().Equal(0, 1, 2);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Slice_NeverReadsPastStopMinusOne(SourceMode mode)
    {
        var endless = Sources.Endless(mode);
        (await endless.Slice(3).ToArrayAsync()).Should().Equal(0, 1, 2);
        endless.MoveNextCalls.Should().Be(3);
        endless.Disposals.Should().Be(1);

        // doc: asynciter-slice
        // Last needed item is index 5; index 6 and 7 (< stop) are not needed, so not read.
        var stepped = Sources.Endless(mode);
        (await stepped.Slice(2, 8, 3).ToArrayAsync()).Should().Equal(2, 5);
        stepped.MoveNextCalls.Should().Be(6);
        // end doc
        stepped.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task Slice_Zero_NeverCallsMoveNextAsync()
    {
        var source = Sources.Endless();
        (await source.Slice(0).ToArrayAsync()).Should().BeEmpty();
        (await source.Slice(4, 2).ToArrayAsync()).Should().BeEmpty();
        source.MoveNextCalls.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Slice_BreakErrorAndCancellation_DisposeOnce(SourceMode mode)
    {
        var endless = Sources.Endless(mode);
        (await OperatorChecks.TakeThenBreakAsync(endless.Slice(1, null, 2), 2)).Should().Equal(1, 3);
        endless.Disposals.Should().Be(1);

        var failing = Sources.Failing(Enumerable.Range(0, 10), failAt: 3, mode);
        (await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(failing.Slice(0, 8, 2))).Should().Equal(0, 2);
        failing.Disposals.Should().Be(1);

        var cancelled = Sources.Endless(mode);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(cancelled.Slice(0, null, 3), after: 2);
        cancelled.LastToken.Should().Be(token);
        cancelled.Disposals.Should().Be(1);
    }
}
