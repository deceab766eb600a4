namespace AsyncIterTools.Tests;

public sealed class TestSourcesTests
{
    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task TrackingSource_CountsProductionAndDisposal(SourceMode mode)
    {
        var source = Sources.Of(mode, 1, 2, 3);
        var seen = new List<int>();
        await foreach (int x in source)
        {
            seen.Add(x);
            if (x == 2)
            {
                break;
            }
        }

        seen.Should().Equal(1, 2);
        source.Produced.Should().Be(2);
        source.Disposals.Should().Be(1);
        source.Enumerators.Should().Be(1);
    }

    [Fact]
    public async Task TrackingSource_WhenProduced_CompletesOnlyOnceThatManyItemsWereHandedOut()
    {
        var source = Sources.Of(SourceMode.Synchronous, 1, 2, 3);
        await using IAsyncEnumerator<int> e = source.GetAsyncEnumerator();
        (await e.MoveNextAsync()).Should().BeTrue();
        Task second = source.WhenProduced(2);

        second.IsCompleted.Should().BeFalse();
        source.WhenProduced(1).IsCompletedSuccessfully.Should().BeTrue("one item was already handed out");
        (await e.MoveNextAsync()).Should().BeTrue();
        await second.WaitAsync(TestWork.Bound);
    }

    [Fact]
    public async Task TrackingSource_FailsAtPosition()
    {
        var source = Sources.Failing(new[] { 1, 2, 3 }, failAt: 1);
        var act = async () => { await foreach (int _ in source) { } };
        await act.Should().ThrowAsync<InvalidOperationException>();
        source.Produced.Should().Be(1);
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public void ManualTimeProvider_FiresDueTimersInOrder()
    {
        var time = new ManualTimeProvider();
        var fired = new List<int>();
        using ITimer a = time.CreateTimer(_ => fired.Add(2), null, TimeSpan.FromSeconds(2), Timeout.InfiniteTimeSpan);
        using ITimer b = time.CreateTimer(_ => fired.Add(1), null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        time.Advance(TimeSpan.FromMilliseconds(1500));
        fired.Should().Equal(1);
        time.Advance(TimeSpan.FromSeconds(1));
        fired.Should().Equal(1, 2);
        time.ArmedTimers.Should().Be(0);
    }
}
