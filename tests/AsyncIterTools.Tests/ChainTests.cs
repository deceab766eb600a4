namespace AsyncIterTools.Tests;

public sealed class ChainTests
{
    [Fact]
    public void Chain_NullArguments_ThrowAtCall()
    {
        IAsyncEnumerable<int> a = Sources.Of(SourceMode.Synchronous, 1);
        ((Action)(() => AsyncIter.Chain((IAsyncEnumerable<int>[])null!))).Should().Throw<ArgumentNullException>().WithParameterName("sources");
        ((Action)(() => AsyncIter.Chain((IEnumerable<IAsyncEnumerable<int>>)null!))).Should().Throw<ArgumentNullException>().WithParameterName("sources");
        ((Action)(() => AsyncIter.Chain(new[] { a, null! }))).Should().ThrowExactly<ArgumentNullException>().WithParameterName("sources");
        ((Action)(() => ((IAsyncEnumerable<int>)null!).Chain(a))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => a.Chain((IAsyncEnumerable<int>[])null!))).Should().Throw<ArgumentNullException>().WithParameterName("others");
        ((Action)(() => a.Chain(a, null!))).Should().ThrowExactly<ArgumentNullException>().WithParameterName("others");
    }

    [Fact]
    public async Task Chain_NoSourcesOrEmptySources_IsEmpty()
    {
        (await AsyncIter.Chain<int>().ToArrayAsync()).Should().BeEmpty();
        (await AsyncIter.Chain(Enumerable.Empty<IAsyncEnumerable<int>>()).ToArrayAsync()).Should().BeEmpty();
        (await AsyncIter.Chain(Sources.Of<int>(SourceMode.Synchronous), Sources.Of<int>(SourceMode.Yielding)).ToArrayAsync()).Should().BeEmpty();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Chain_AllOverloads_ConcatenateInOrder(SourceMode mode)
    {
        // list(chain([1, 2], [], [3])) == [1, 2, 3]
        var a = Sources.Of(mode, 1, 2);
        var b = Sources.Of<int>(mode);
        var c = Sources.Of(mode, 3);

        (await AsyncIter.Chain(a, b, c).ToArrayAsync()).Should().Equal(1, 2, 3);
        (await a.Chain(b, c).ToArrayAsync()).Should().Equal(1, 2, 3);
        (await AsyncIter.Chain(new IAsyncEnumerable<int>[] { a, b, c }).ToArrayAsync()).Should().Equal(1, 2, 3);
        (await AsyncIter.Chain(new List<IAsyncEnumerable<int>> { a, b, c }).ToArrayAsync()).Should().Equal(1, 2, 3);
        (await AsyncIter.Chain(a).ToArrayAsync()).Should().Equal(1, 2);
        (await a.Chain().ToArrayAsync()).Should().Equal(1, 2);
    }

    [Fact]
    public async Task Chain_StaticAndExtensionForms_ResolveWithoutAmbiguity()
    {
        // Both the static params overload and the extension are candidates for these calls; each must compile and agree.
        IAsyncEnumerable<int> a = new[] { 1 }.ToAsyncEnumerable();
        IAsyncEnumerable<int> b = new[] { 2 }.ToAsyncEnumerable();
        TrackingSource<int> c = Sources.Of(SourceMode.Synchronous, 3);

        // doc: asynciter-chain
        IAsyncEnumerable<int> staticForm = AsyncIter.Chain(a, b, c);
        IAsyncEnumerable<int> extensionForm = a.Chain(b, c);
        IAsyncEnumerable<int> extensionCalledStatically = AsyncIter.Chain(a, others: [b, c]);
        IAsyncEnumerable<int> staticWithOne = AsyncIter.Chain(c);
        IAsyncEnumerable<int> explicitArray = AsyncIter.Chain(sources: [a, b, c]);
        // end doc

        (await staticForm.ToArrayAsync()).Should().Equal(1, 2, 3);
        (await extensionForm.ToArrayAsync()).Should().Equal(1, 2, 3);
        (await extensionCalledStatically.ToArrayAsync()).Should().Equal(1, 2, 3);
        (await staticWithOne.ToArrayAsync()).Should().Equal(3);
        (await explicitArray.ToArrayAsync()).Should().Equal(1, 2, 3);
    }

    [Fact]
    public async Task Chain_ParamsArray_IsCopiedAtTheCall()
    {
        var sources = new IAsyncEnumerable<int>[] { Sources.Of(SourceMode.Synchronous, 1) };
        IAsyncEnumerable<int> chained = AsyncIter.Chain(sources);
        sources[0] = Sources.Of(SourceMode.Synchronous, 99);
        (await chained.ToArrayAsync()).Should().Equal(1);
    }

    [Fact]
    public async Task Chain_EnumerableOfSources_IsReadLazily()
    {
        int produced = 0;
        IEnumerable<IAsyncEnumerable<int>> Endless()
        {
            for (int i = 0; ; i++)
            {
                produced++;
                yield return Sources.Of(SourceMode.Synchronous, i, i);
            }
        }

        IAsyncEnumerable<int> chained = AsyncIter.Chain(Endless());
        produced.Should().Be(0);
        (await chained.Take(5).ToArrayAsync()).Should().Equal(0, 0, 1, 1, 2);
        produced.Should().Be(3);
    }

    [Fact]
    public async Task Chain_NullElementInLazySources_ThrowsArgumentNullWhenReached()
    {
        IAsyncEnumerable<int> chained = AsyncIter.Chain(new List<IAsyncEnumerable<int>> { Sources.Of(SourceMode.Synchronous, 1), null! });
        (await OperatorChecks.CollectExpectingFailureAsync<int, ArgumentNullException>(chained)).Should().Equal(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Chain_Completion_DisposesEachSourceOnceBeforeTheNext(SourceMode mode)
    {
        var a = Sources.Of(mode, 1);
        var b = Sources.Of(mode, 2);
        var seenDisposalsOfA = new List<int>();
        await foreach (int x in a.Chain(b))
        {
            seenDisposalsOfA.Add(a.Disposals);
        }

        seenDisposalsOfA.Should().Equal(0, 1);
        a.Disposals.Should().Be(1);
        b.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Chain_Break_DisposesOpenSourceAndNeverOpensTheRest(SourceMode mode)
    {
        var a = Sources.Of(mode, 1, 2);
        var b = Sources.Of(mode, 3, 4);
        var c = Sources.Of(mode, 5);
        (await OperatorChecks.TakeThenBreakAsync(AsyncIter.Chain(a, b, c), 3)).Should().Equal(1, 2, 3);
        a.Disposals.Should().Be(1);
        b.Disposals.Should().Be(1);
        c.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Chain_SourceError_PropagatesAndDisposes(SourceMode mode)
    {
        var a = Sources.Of(mode, 1);
        var b = Sources.Failing(new[] { 2, 3 }, failAt: 1, mode);
        var c = Sources.Of(mode, 4);
        (await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(AsyncIter.Chain(a, b, c))).Should().Equal(1, 2);
        a.Disposals.Should().Be(1);
        b.Disposals.Should().Be(1);
        c.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Chain_Cancellation_ReachesEverySourceAndDisposes(SourceMode mode)
    {
        var a = Sources.Of(mode, 1);
        var b = Sources.Endless(mode);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(a.Chain(b), after: 3);
        a.LastToken.Should().Be(token);
        b.LastToken.Should().Be(token);
        a.Disposals.Should().Be(1);
        b.Disposals.Should().Be(1);
    }
}
