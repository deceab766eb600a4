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
    public void FakeTimeProvider_Advance_FiresDueTimersOnTheCallingThreadInDueOrderBeforeReturning()
    {
        // What the timeout tests rely on: after Advance returns, every timer due by then has run, on the test's thread.
        var time = new FakeTimeProvider();
        int testThread = Environment.CurrentManagedThreadId;
        var fired = new List<(int Timer, int Thread)>();
        using ITimer a = time.CreateTimer(_ => fired.Add((2, Environment.CurrentManagedThreadId)), null, TimeSpan.FromSeconds(2), Timeout.InfiniteTimeSpan);
        using ITimer b = time.CreateTimer(_ => fired.Add((1, Environment.CurrentManagedThreadId)), null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        time.Advance(TimeSpan.FromMilliseconds(999));
        fired.Should().BeEmpty();
        time.Advance(TimeSpan.FromMilliseconds(501));
        fired.Should().Equal((1, testThread));
        time.Advance(TimeSpan.FromSeconds(1));
        fired.Should().Equal((1, testThread), (2, testThread));
    }

    [Fact]
    public async Task CountingTimeProvider_CountsCreatedActiveAndArmedTimers()
    {
        var time = new CountingTimeProvider();
        int fired = 0;
        Task armed = time.WaitForArmedTimersAsync(2);
        ITimer once = time.CreateTimer(_ => fired++, null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        armed.IsCompleted.Should().BeFalse("one timer is armed, the test waits for two");
        using ITimer idle = time.CreateTimer(_ => fired++, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        armed.IsCompleted.Should().BeFalse("a timer created with an infinite due time is not armed");
        idle.Change(TimeSpan.FromSeconds(5), Timeout.InfiniteTimeSpan).Should().BeTrue();
        await armed.WaitAsync(TestWork.Bound);
        (time.TimerCreations, time.ActiveTimers, time.ArmedTimers).Should().Be((2L, 2, 2));

        time.Advance(TimeSpan.FromSeconds(1));
        fired.Should().Be(1);
        time.ArmedTimers.Should().Be(1, "a one-shot timer that fired is no longer armed");
        once.Change(TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan).Should().BeTrue();
        time.ArmedTimers.Should().Be(2, "Change arms it again");

        once.Dispose();
        once.Change(TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan).Should().BeFalse("a disposed timer cannot be changed");
        (time.ActiveTimers, time.ArmedTimers).Should().Be((1, 1));
        time.Advance(TimeSpan.FromSeconds(4));
        fired.Should().Be(2, "the disposed timer never fires; the other fires at five seconds");
        (time.TimerCreations, time.ActiveTimers, time.ArmedTimers).Should().Be((2L, 1, 0));
    }
}
