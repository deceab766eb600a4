namespace AsyncIterTools.Tests;

public sealed class ZipLongestTests
{
    [Fact]
    public void ZipLongest_NullArguments_ThrowAtCall()
    {
        var a = Sources.Of(SourceMode.Synchronous, 1);
        ((Action)(() => AsyncIter.ZipLongest<int, int>(null!, a))).Should().Throw<ArgumentNullException>().WithParameterName("first");
        ((Action)(() => AsyncIter.ZipLongest<int, int>(a, null!))).Should().Throw<ArgumentNullException>().WithParameterName("second");
        ((Action)(() => AsyncIter.ZipLongest(0, (IAsyncEnumerable<int>[])null!))).Should().Throw<ArgumentNullException>().WithParameterName("sources");
        ((Action)(() => AsyncIter.ZipLongest(0, a, null!))).Should().ThrowExactly<ArgumentNullException>().WithParameterName("sources");
        a.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task ZipLongest_Empty_IsEmpty(SourceMode mode)
    {
        (await AsyncIter.ZipLongest(Sources.Of<int>(mode), Sources.Of<string>(mode)).ToArrayAsync()).Should().BeEmpty();
        (await AsyncIter.ZipLongest(0, Sources.Of<int>(mode), Sources.Of<int>(mode)).ToArrayAsync()).Should().BeEmpty();
        (await AsyncIter.ZipLongest<int>(0).ToArrayAsync()).Should().BeEmpty();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task ZipLongest_Pair_MatchesPython(SourceMode mode)
    {
        // doc: asynciter-ziplongest
        // list(zip_longest([1, 2, 3], 'ab', fillvalue='-')) == [(1, 'a'), (2, 'b'), (3, '-')]
        (await AsyncIter.ZipLongest(Sources.Of(mode, 1, 2, 3), Sources.From("ab", mode), secondFill: '-').ToArrayAsync())
            .Should().Equal((1, 'a'), (2, 'b'), (3, '-'));
        // end doc
        (await AsyncIter.ZipLongest(Sources.Of(mode, 1), Sources.From("abc", mode), -1, '-').ToArrayAsync())
            .Should().Equal((1, 'a'), (-1, 'b'), (-1, 'c'));
        (await AsyncIter.ZipLongest(Sources.Of(mode, 1, 2), Sources.Of<string>(mode)).ToArrayAsync())
            .Should().Equal((1, (string?)null), (2, (string?)null));
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task ZipLongest_Many_MatchesPython(SourceMode mode)
    {
        // list(zip_longest([1, 2, 3], [10], [20, 21], fillvalue=0)) == [(1, 10, 20), (2, 0, 21), (3, 0, 0)]
        var rows = await AsyncIter.ZipLongest(0, Sources.Of(mode, 1, 2, 3), Sources.Of(mode, 10), Sources.Of(mode, 20, 21)).ToArrayAsync();
        rows.Should().BeEquivalentTo(new[] { new[] { 1, 10, 20 }, [2, 0, 21], [3, 0, 0] }, o => o.WithStrictOrdering());
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task ZipLongest_EndedSource_IsNotReadAgain_AndAllAreDisposed(SourceMode mode)
    {
        var shortOne = Sources.Of(mode, 1);
        var longOne = Sources.Of(mode, 1, 2, 3, 4);
        await AsyncIter.ZipLongest(shortOne, longOne).ToArrayAsync();
        shortOne.MoveNextCalls.Should().Be(2);
        shortOne.Disposals.Should().Be(1);
        longOne.Disposals.Should().Be(1);

        var sources = new[] { Sources.Of(mode, 1), Sources.Of(mode, 1, 2, 3) };
        await AsyncIter.ZipLongest(0, sources).ToArrayAsync();
        sources[0].MoveNextCalls.Should().Be(2);
        sources.Should().AllSatisfy(s => s.Disposals.Should().Be(1));
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task ZipLongest_BreakErrorAndCancellation_DisposeAll(SourceMode mode)
    {
        var a = Sources.Endless(mode);
        var b = Sources.Of(mode, 5);
        (await OperatorChecks.TakeThenBreakAsync(AsyncIter.ZipLongest(a, b), 2)).Should().Equal((0, 5), (1, 0));
        a.Disposals.Should().Be(1);
        b.Disposals.Should().Be(1);

        TrackingSource<int>[] many = [Sources.Of(mode, 1, 2), Sources.Failing(new[] { 1, 2 }, failAt: 1, mode), Sources.Of(mode, 3)];
        (await OperatorChecks.CollectExpectingFailureAsync<int[], InvalidOperationException>(AsyncIter.ZipLongest(0, many))).Should().HaveCount(1);
        many.Should().AllSatisfy(s => s.Disposals.Should().Be(1));

        var pairFailing = Sources.Failing(new[] { 'x' }, failAt: 0, mode);
        var pairOther = Sources.Of(mode, 1, 2);
        await OperatorChecks.CollectExpectingFailureAsync<(int, char), InvalidOperationException>(AsyncIter.ZipLongest(pairOther, pairFailing));
        pairOther.Disposals.Should().Be(1);
        pairFailing.Disposals.Should().Be(1);

        TrackingSource<int>[] cancelled = [Sources.Endless(mode), Sources.Endless(mode)];
        CancellationToken token = await OperatorChecks.CancelAfterAsync(AsyncIter.ZipLongest(-1, cancelled), after: 2);
        cancelled.Should().AllSatisfy(s => s.LastToken.Should().Be(token));
        cancelled.Should().AllSatisfy(s => s.Disposals.Should().Be(1));

        var x = Sources.Endless(mode);
        var y = Sources.Endless(mode);
        token = await OperatorChecks.CancelAfterAsync(AsyncIter.ZipLongest(x, y), after: 1);
        x.LastToken.Should().Be(token);
        y.LastToken.Should().Be(token);
        x.Disposals.Should().Be(1);
        y.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task ZipLongest_ASourceThatEnded_IsDisposedAtItsEnd_NotWhenTheLongestEnds(SourceMode mode)
    {
        var shortOne = Sources.Of(mode, 1);
        var endless = Sources.Endless(mode);
        await using (IAsyncEnumerator<(int, int)> pairs = AsyncIter.ZipLongest(shortOne, endless, -1, -1).GetAsyncEnumerator())
        {
            (await pairs.MoveNextAsync()).Should().BeTrue();
            shortOne.Disposals.Should().Be(0);
            (await pairs.MoveNextAsync()).Should().BeTrue(); // the short one ends here
            pairs.Current.Should().Be((-1, 1));
            shortOne.Disposals.Should().Be(1);
            endless.Disposals.Should().Be(0);
        }

        shortOne.Disposals.Should().Be(1);
        endless.Disposals.Should().Be(1);

        TrackingSource<int>[] sources = [Sources.Endless(mode), Sources.Of(mode, 7), Sources.Endless(mode)];
        await using (IAsyncEnumerator<int[]> rows = AsyncIter.ZipLongest(-1, sources).GetAsyncEnumerator())
        {
            (await rows.MoveNextAsync()).Should().BeTrue();
            (await rows.MoveNextAsync()).Should().BeTrue();
            rows.Current.Should().Equal(1, -1, 1);
            sources.Select(s => s.Disposals).Should().Equal(0, 1, 0);
        }

        sources.Should().AllSatisfy(s => s.Disposals.Should().Be(1));
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task ZipLongest_AnEndedSourcesDisposalFailure_SurfacesWhereItEnded_AndTheOthersAreDisposed(SourceMode mode)
    {
        var failingDispose = new TrackingSource<int>(new[] { 1 }, mode) { DisposeFailure = new InvalidOperationException("dispose failed") };
        var endless = Sources.Endless(mode);
        await using IAsyncEnumerator<(int, int)> pairs = AsyncIter.ZipLongest(failingDispose, endless).GetAsyncEnumerator();
        (await pairs.MoveNextAsync()).Should().BeTrue();
        await FluentActions.Awaiting(async () => await pairs.MoveNextAsync()).Should().ThrowAsync<InvalidOperationException>().WithMessage("dispose failed");
        failingDispose.Disposals.Should().Be(1);
        endless.Disposals.Should().Be(1);
    }

    // A source that ends and fails to dispose: its failure came first, and surfaces from that MoveNextAsync even when
    // disposing the other source (done then too) fails as well.
    [Fact]
    public async Task ZipLongestPair_AnEndedSourcesDisposalFailure_WinsOverALaterOneOfTheOtherSource()
    {
        var ended = new InvalidOperationException("dispose of the ended source");
        var other = new InvalidOperationException("dispose of the other source");
        var first = new TrackingSource<int>(new[] { 1 }) { DisposeFailure = ended };
        var second = new TrackingSource<int>(new[] { 10, 20, 30 }) { DisposeFailure = other };
        await using IAsyncEnumerator<(int, int)> e = AsyncIter.ZipLongest(first, second).GetAsyncEnumerator();
        (await e.MoveNextAsync()).Should().BeTrue();
        Exception? thrown = await RecordAsync(() => e.MoveNextAsync().AsTask());
        first.Disposals.Should().Be(1);
        second.Disposals.Should().Be(1);
        thrown.Should().BeSameAs(ended, "the failure of the disposal that ended the step surfaces from that MoveNextAsync");
    }

    [Fact]
    public async Task ZipLongestMany_AnEndedSourcesDisposalFailure_WinsOverALaterOneOfAnotherSource()
    {
        var ended = new InvalidOperationException("dispose of the ended source");
        var other = new InvalidOperationException("dispose of the other source");
        var a = new TrackingSource<int>(new[] { 1 }) { DisposeFailure = ended };
        var b = new TrackingSource<int>(new[] { 10, 20, 30 }) { DisposeFailure = other };
        await using IAsyncEnumerator<int[]> e = AsyncIter.ZipLongest(0, a, b).GetAsyncEnumerator();
        (await e.MoveNextAsync()).Should().BeTrue();
        Exception? thrown = await RecordAsync(() => e.MoveNextAsync().AsTask());
        a.Disposals.Should().Be(1);
        b.Disposals.Should().Be(1);
        thrown.Should().BeSameAs(ended, "the failure of the disposal that ended the step surfaces from that MoveNextAsync");
    }

    private static async Task<Exception?> RecordAsync(Func<Task> action)
    {
        try
        {
            await action().WaitAsync(TestWork.Bound);
            return null;
        }
        catch (Exception ex)
        {
            return ex;
        }
    }
}
