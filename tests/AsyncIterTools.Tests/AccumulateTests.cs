namespace AsyncIterTools.Tests;

public sealed class AccumulateTests
{
    private static readonly Func<int, int, int> s_add = (a, b) => a + b;
    private static readonly Func<int, int, CancellationToken, ValueTask<int>> s_addAsync = async (a, b, ct) =>
    {
        await Task.Yield();
        return a + b;
    };

    [Fact]
    public void Accumulate_NullArguments_ThrowAtCall()
    {
        IAsyncEnumerable<int> nil = null!;
        var source = Sources.Of(SourceMode.Synchronous, 1);
        ((Action)(() => nil.Accumulate(s_add))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => nil.Accumulate(s_addAsync))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => nil.Accumulate(0L, (a, x) => a + x))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => nil.Accumulate(0L, (a, x, ct) => ValueTask.FromResult(a + x)))).Should().Throw<ArgumentNullException>().WithParameterName("source");
        ((Action)(() => source.Accumulate((Func<int, int, int>)null!))).Should().Throw<ArgumentNullException>().WithParameterName("func");
        ((Action)(() => source.Accumulate((Func<int, int, CancellationToken, ValueTask<int>>)null!))).Should().Throw<ArgumentNullException>().WithParameterName("func");
        ((Action)(() => source.Accumulate(0L, (Func<long, int, long>)null!))).Should().Throw<ArgumentNullException>().WithParameterName("func");
        ((Action)(() => source.Accumulate(0L, (Func<long, int, CancellationToken, ValueTask<long>>)null!))).Should().Throw<ArgumentNullException>().WithParameterName("func");
        source.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Accumulate_Empty_IsEmptyOrJustTheSeed(SourceMode mode)
    {
        (await Sources.Of<int>(mode).Accumulate(s_add).ToArrayAsync()).Should().BeEmpty();
        (await Sources.Of<int>(mode).Accumulate(s_addAsync).ToArrayAsync()).Should().BeEmpty();
        // list(accumulate([], initial=7)) == [7]
        (await Sources.Of<int>(mode).Accumulate(7, s_add).ToArrayAsync()).Should().Equal(7);
        (await Sources.Of<int>(mode).Accumulate(7, s_addAsync).ToArrayAsync()).Should().Equal(7);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Accumulate_MatchesPython(SourceMode mode)
    {
        // list(accumulate([1, 2, 3, 4, 5])) == [1, 3, 6, 10, 15]
        (await Sources.Of(mode, 1, 2, 3, 4, 5).Accumulate(s_add).ToArrayAsync()).Should().Equal(1, 3, 6, 10, 15);
        (await Sources.Of(mode, 1, 2, 3, 4, 5).Accumulate(s_addAsync).ToArrayAsync()).Should().Equal(1, 3, 6, 10, 15);
        // list(accumulate([3, 1, 4, 1, 5], max)) == [3, 3, 4, 4, 5]
        (await Sources.Of(mode, 3, 1, 4, 1, 5).Accumulate(Math.Max).ToArrayAsync()).Should().Equal(3, 3, 4, 4, 5);
        // doc: asynciter-accumulate
        // list(accumulate([1, 2, 3], lambda a, x: a * 10 + x, initial=100)) == [100, 1001, 10012, 100123]
        (await Sources.Of(mode, 1, 2, 3).Accumulate(100L, (a, x) => (a * 10) + x).ToArrayAsync()).Should().Equal(100L, 1001L, 10012L, 100123L);
        // end doc
        (await Sources.Of(mode, 1, 2, 3).Accumulate(100L, (a, x, ct) => ValueTask.FromResult((a * 10) + x)).ToArrayAsync())
            .Should().Equal(100L, 1001L, 10012L, 100123L);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Accumulate_SeedOfAnotherType_BuildsStrings(SourceMode mode)
    {
        (await Sources.From("abc", mode).Accumulate("", (acc, c) => acc + c).ToArrayAsync()).Should().Equal("", "a", "ab", "abc");
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Accumulate_AsyncFunc_ReceivesTheEnumerationToken(SourceMode mode)
    {
        using var cts = new CancellationTokenSource();
        var seen = new List<CancellationToken>();
        var source = Sources.Of(mode, 1, 2, 3);
        await foreach (int _ in source.Accumulate((a, b, ct) => { seen.Add(ct); return ValueTask.FromResult(a + b); }).WithCancellation(cts.Token))
        {
        }

        seen.Should().HaveCount(2).And.AllSatisfy(t => t.Should().Be(cts.Token));
        source.LastToken.Should().Be(cts.Token);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Accumulate_BreakErrorFuncErrorAndCancellation_DisposeOnce(SourceMode mode)
    {
        var endless = Sources.Endless(mode);
        (await OperatorChecks.TakeThenBreakAsync(endless.Accumulate(s_add), 3)).Should().Equal(0, 1, 3);
        endless.Disposals.Should().Be(1);

        var failing = Sources.Failing(new[] { 1, 2, 3 }, failAt: 2, mode);
        (await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(failing.Accumulate(0, s_addAsync))).Should().Equal(0, 1, 3);
        failing.Disposals.Should().Be(1);

        var source = Sources.Of(mode, 1, 2, 3);
        (await OperatorChecks.CollectExpectingFailureAsync<int, DivideByZeroException>(source.Accumulate((a, b) => b == 3 ? throw new DivideByZeroException() : a + b)))
            .Should().Equal(1, 3);
        source.Disposals.Should().Be(1);

        var cancelled = Sources.Endless(mode);
        CancellationToken token = await OperatorChecks.CancelAfterAsync(cancelled.Accumulate(0L, (a, x) => a + x), after: 2);
        cancelled.LastToken.Should().Be(token);
        cancelled.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Accumulate_Seed_IsNotYieldedOnceTheTokenIsCancelled(SourceMode mode)
    {
        var source = Sources.Of(mode, 1, 2, 3);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        await using IAsyncEnumerator<int> e = source.Accumulate(100, (a, x) => a + x).GetAsyncEnumerator(cts.Token);
        await FluentActions.Awaiting(async () => await e.MoveNextAsync()).Should().ThrowAsync<OperationCanceledException>();
        source.MoveNextCalls.Should().Be(0);
    }
}
