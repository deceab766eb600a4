namespace AsyncIterTools.Tests;

public sealed class RepeatTests
{
    [Fact]
    public void Repeat_NegativeTimes_ThrowsAtCall()
    {
        Action act = () => AsyncIter.Repeat("x", -1);
        act.Should().Throw<ArgumentOutOfRangeException>().WithParameterName("times");
    }

    [Fact]
    public async Task Repeat_ZeroTimes_IsEmpty()
    {
        (await AsyncIter.Repeat(1, 0).ToArrayAsync()).Should().BeEmpty();
    }

    [Fact]
    public async Task Repeat_Times_YieldsTheSameValue()
    {
        // doc: asynciter-repeat
        // list(repeat(10, 3))
        (await AsyncIter.Repeat(10, 3).ToArrayAsync()).Should().Equal(10, 10, 10);
        // end doc
        var instance = new object();
        (await AsyncIter.Repeat(instance, 2).ToArrayAsync()).Should().AllSatisfy(x => x.Should().BeSameAs(instance));
    }

    [Fact]
    public async Task Repeat_NullTimes_IsEndless()
    {
        (await AsyncIter.Repeat('a').Take(1000).CountAsync()).Should().Be(1000);
    }

    [Fact]
    public async Task Repeat_Cancelled_StopsBothForms()
    {
        await OperatorChecks.CancelAfterAsync(AsyncIter.Repeat(1), after: 2);
        await OperatorChecks.CancelAfterAsync(AsyncIter.Repeat(1, 10), after: 2);
    }

    [Fact]
    public async Task Repeat_IsDeferredAndReenumerable()
    {
        IAsyncEnumerable<int> twice = AsyncIter.Repeat(4, 2);
        (await twice.ToArrayAsync()).Should().Equal(4, 4);
        (await twice.ToArrayAsync()).Should().Equal(4, 4);
    }
}
