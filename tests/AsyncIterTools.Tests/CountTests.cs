namespace AsyncIterTools.Tests;

public sealed class CountTests
{
    [Fact]
    public async Task Count_Defaults_StartsAtZeroStepOne()
    {
        (await AsyncIter.Count().Take(4).ToArrayAsync()).Should().Equal(0L, 1L, 2L, 3L);
    }

    [Fact]
    public async Task Count_StartAndStep_MatchesPython()
    {
        // doc: asynciter-count
        // list(islice(count(10, 3), 4))
        (await AsyncIter.Count(10, 3).Take(4).ToArrayAsync()).Should().Equal(10L, 13L, 16L, 19L);
        // end doc
        // list(islice(count(5, -2), 4))
        (await AsyncIter.Count(5, -2).Take(4).ToArrayAsync()).Should().Equal(5L, 3L, 1L, -1L);
    }

    [Fact]
    public async Task Count_ZeroStep_RepeatsStart()
    {
        (await AsyncIter.Count(7, 0).Take(3).ToArrayAsync()).Should().Equal(7L, 7L, 7L);
    }

    [Fact]
    public async Task Count_PastMaxValue_WrapsAround()
    {
        (await AsyncIter.Count(long.MaxValue).Take(2).ToArrayAsync()).Should().Equal(long.MaxValue, long.MinValue);
    }

    [Fact]
    public async Task Count_Cancelled_StopsTheEndlessLoop()
    {
        await OperatorChecks.CancelAfterAsync(AsyncIter.Count(), after: 3);
        await OperatorChecks.CancelAfterAsync(AsyncIter.Count(), after: 0);
    }
}
