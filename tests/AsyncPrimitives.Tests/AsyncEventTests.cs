using static AsyncPrimitives.Tests.Support.Settle;

namespace AsyncPrimitives.Tests;

/// <summary>
/// AsyncEvent: the behaviour Toro's test_event.py, tornado's EventTest and CPython's asyncio EventTests check,
/// plus the AsyncTools contract (timeouts, cancellation, no inline continuations, no allocation when set).
/// </summary>
public sealed class AsyncEventTests
{
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(10);

    /// <summary>True only on the test's own thread while it is inside Set(): a continuation that sees it ran inline.</summary>
    [ThreadStatic]
    private static bool t_insideSet;

    [Fact]
    public void Constructor_Default_IsClear()
    {
        var ev = new AsyncEvent();

        ev.IsSet.Should().BeFalse();
        ev.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public void Constructor_InitialStateTrue_IsSet()
    {
        var ev = new AsyncEvent(initialState: true);

        ev.IsSet.Should().BeTrue();
        ev.WaitAsync().IsCompletedSuccessfully.Should().BeTrue();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(100)]
    public async Task Set_WithWaiters_WakesEveryWaiter_EvenIfClearedRightAfter(int waiters)
    {
        var ev = new AsyncEvent();
        Task[] waits = Enumerable.Range(0, waiters).Select(_ => ev.WaitAsync().AsTask()).ToArray();
        waits.Should().OnlyContain(t => !t.IsCompleted);
        ev.Lines.Waiting.Should().Be(waiters);

        ev.Set();
        ev.Clear();

        await Task.WhenAll(waits).WaitAsync(s_bound);
        ev.Lines.Waiting.Should().Be(0);
        ev.IsSet.Should().BeFalse();
    }

    [Fact]
    public void WaitAsync_WhenSet_CompletesSynchronouslyAndAllocatesNothing()
    {
        var ev = new AsyncEvent(initialState: true);
        WaitOnSetEvent(ev, 1); // warm up

        (bool allCompleted, long allocated) = WaitOnSetEvent(ev, 100);

        allCompleted.Should().BeTrue();
        allocated.Should().Be(0);
    }

    [Fact]
    public async Task WaitAsync_AfterClear_BlocksUntilNextSet()
    {
        var ev = new AsyncEvent(initialState: true);
        ev.Clear();
        ev.IsSet.Should().BeFalse();

        Task wait = ev.WaitAsync().AsTask();

        wait.IsCompleted.Should().BeFalse();
        ev.Lines.Waiting.Should().Be(1);
        ev.Set();
        await wait.WaitAsync(s_bound);
        ev.IsSet.Should().BeTrue();
    }

    [Fact]
    public async Task WaitAsync_RegisteredBeforeClear_StillCompletesAtNextSet()
    {
        // tornado test_event_wait_clear: f1 = wait(); clear(); f2 = wait(); set() -> both done.
        var ev = new AsyncEvent();
        Task first = ev.WaitAsync().AsTask();
        ev.Clear();
        Task second = ev.WaitAsync().AsTask();

        first.IsCompleted.Should().BeFalse();
        second.IsCompleted.Should().BeFalse();
        ev.Set();

        await Task.WhenAll(first, second).WaitAsync(s_bound);
    }

    [Fact]
    public async Task WaitAsync_CompletedBySet_StaysCompletedAfterClearAndSetAgain()
    {
        // asyncio test_clear_with_waiters: a waiter woken by set() is done even if clear() and set() follow.
        var ev = new AsyncEvent();
        Task wait = ev.WaitAsync().AsTask();

        ev.Set();
        ev.Clear();
        ev.Set();
        ev.Clear();

        await wait.WaitAsync(s_bound);
        ev.Lines.Waiting.Should().Be(0);
        ev.IsSet.Should().BeFalse();
    }

    [Fact]
    public void Set_WhenAlreadySet_DoesNothing()
    {
        var ev = new AsyncEvent();
        ev.Set();
        ev.Set();

        ev.IsSet.Should().BeTrue();
        ev.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task WaitAsync_Timeout_ThrowsTimeoutExceptionAndLeavesNoWaiter()
    {
        var time = new CountingTimeProvider();
        var ev = new AsyncEvent(timeProvider: time);

        // An hour: only the given clock can end it within the test's bound.
        Task wait = ev.WaitAsync(TimeSpan.FromHours(1)).AsTask();
        time.Advance(TimeSpan.FromHours(1) - TimeSpan.FromMilliseconds(1));
        wait.IsCompleted.Should().BeFalse();
        time.Advance(TimeSpan.FromMilliseconds(1));

        await ThrowsSoon<TimeoutException>(wait);
        ev.Lines.Waiting.Should().Be(0);
        ev.IsSet.Should().BeFalse();
        time.ActiveTimers.Should().Be(0);

        // After a timed-out waiter, the event works normally (Toro test_event_timeout).
        Task next = ev.WaitAsync(TimeSpan.FromSeconds(1)).AsTask();
        ev.Set();
        await next.WaitAsync(s_bound);
    }

    [Fact]
    public async Task WaitAsync_TimeoutAmongWaiters_OnlyThatWaiterLeaves()
    {
        var time = new FakeTimeProvider();
        var ev = new AsyncEvent(timeProvider: time);
        Task forever = ev.WaitAsync().AsTask();
        Task shortWait = ev.WaitAsync(TimeSpan.FromSeconds(1)).AsTask();
        Task longWait = ev.WaitAsync(TimeSpan.FromSeconds(5)).AsTask();

        time.Advance(TimeSpan.FromSeconds(1));

        await ThrowsSoon<TimeoutException>(shortWait);
        ev.Lines.Waiting.Should().Be(2);
        ev.Set();
        await Task.WhenAll(forever, longWait).WaitAsync(s_bound);
    }

    [Fact]
    public async Task WaitAsync_SetBeforeTimeout_Succeeds()
    {
        var time = new CountingTimeProvider();
        var ev = new AsyncEvent(timeProvider: time);
        Task wait = ev.WaitAsync(TimeSpan.FromSeconds(1)).AsTask();

        time.Advance(TimeSpan.FromMilliseconds(500));
        ev.Set();
        await wait.WaitAsync(s_bound);
        time.Advance(TimeSpan.FromSeconds(5)); // the disarmed timeout must not fault anything

        wait.IsCompletedSuccessfully.Should().BeTrue();
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task WaitAsync_PreCancelledToken_FailsAtOnceEvenIfSet()
    {
        var ev = new AsyncEvent(initialState: true);
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        ValueTask wait = ev.WaitAsync(cts.Token);
        ValueTask timed = ev.WaitAsync(TimeSpan.FromSeconds(1), cts.Token);

        wait.IsCanceled.Should().BeTrue();
        timed.IsCanceled.Should().BeTrue();
        await FluentActions.Awaiting(() => wait.AsTask()).Should().ThrowAsync<OperationCanceledException>();
        ev.Clear();
        ev.WaitAsync(cts.Token).IsCanceled.Should().BeTrue();
        ev.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task WaitAsync_CancelledWhileWaiting_ThrowsAndLeavesNoWaiter()
    {
        // asyncio test_wait_cancel
        var ev = new AsyncEvent();
        using var cts = new CancellationTokenSource();
        Task cancelled = ev.WaitAsync(cts.Token).AsTask();
        Task other = ev.WaitAsync().AsTask();

        cts.Cancel();

        OperationCanceledException ex = await ThrowsSoon<OperationCanceledException>(cancelled);
        ex.CancellationToken.Should().Be(cts.Token);
        ev.Lines.Waiting.Should().Be(1);
        ev.Set();
        await other.WaitAsync(s_bound);
    }

    [Fact]
    public void WaitAsync_ZeroTimeout_SucceedsWhenSetAndTimesOutAtOnceWhenClear()
    {
        var time = new CountingTimeProvider();
        var ev = new AsyncEvent(timeProvider: time);

        ValueTask clear = ev.WaitAsync(TimeSpan.Zero);
        clear.IsFaulted.Should().BeTrue();
        clear.AsTask().Exception!.InnerException.Should().BeOfType<TimeoutException>();
        ev.Lines.Waiting.Should().Be(0);
        time.TimerCreations.Should().Be(0);

        ev.Set();
        ev.WaitAsync(TimeSpan.Zero).IsCompletedSuccessfully.Should().BeTrue();
    }

    [Fact]
    public async Task WaitAsync_InfiniteTimeout_WaitsForSet()
    {
        var time = new CountingTimeProvider();
        var ev = new AsyncEvent(timeProvider: time);
        Task wait = ev.WaitAsync(Timeout.InfiniteTimeSpan).AsTask();

        time.Advance(TimeSpan.FromDays(30));
        wait.IsCompleted.Should().BeFalse();
        time.TimerCreations.Should().Be(0);
        ev.Set();
        await wait.WaitAsync(s_bound);
    }

    public static TheoryData<TimeSpan> InvalidTimeouts => new()
    {
        TimeSpan.FromMilliseconds(-2),
        TimeSpan.FromTicks(-1),
        TimeSpan.MinValue,
        TimeSpan.MaxValue,
        TimeSpan.FromMilliseconds(uint.MaxValue),
    };

    [Theory]
    [MemberData(nameof(InvalidTimeouts))]
    public void WaitAsync_InvalidTimeout_ThrowsArgumentOutOfRange(TimeSpan timeout)
    {
        var ev = new AsyncEvent(initialState: true);

        FluentActions.Invoking(() => ev.WaitAsync(timeout))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
    }

    [Fact]
    public async Task Set_NeverRunsAWaitersContinuationInline()
    {
        var ev = new AsyncEvent();
        Task<bool> waiter = WaitAndReportInline(ev);

        t_insideSet = true;
        try
        {
            ev.Set();
        }
        finally
        {
            t_insideSet = false;
        }

        (await waiter.WaitAsync(s_bound)).Should().BeFalse("Set must not run the waiter's continuation on its own stack");
    }

    [Fact]
    public async Task ToString_ShowsStateAndWaiters()
    {
        var ev = new AsyncEvent();
        ev.ToString().Should().Be("AsyncEvent(clear, waiters=0)");

        Task pending = ev.WaitAsync().AsTask();
        ev.ToString().Should().Be("AsyncEvent(clear, waiters=1)");

        ev.Set();
        ev.ToString().Should().Be("AsyncEvent(set, waiters=0)");
        await pending.WaitAsync(s_bound);
    }

    [Fact]
    public void ToString_WithAName_ShowsItFirst()
    {
        var ev = new AsyncEvent(initialState: true) { Name = "warmed-up" };
        ev.Name.Should().Be("warmed-up");
        ev.ToString().Should().Be("AsyncEvent(name=\"warmed-up\", set, waiters=0)");
        new AsyncEvent().Name.Should().BeNull();
    }

    [Fact]
    public async Task SetClearAndWaits_Racing_EveryWaiterBeforeTheFinalSetCompletes()
    {
        var ev = new AsyncEvent();
        var waits = new System.Collections.Concurrent.ConcurrentBag<Task>();
        int succeeded = 0, cancelled = 0, timedOut = 0;

        Task[] workers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            var rng = new Random(w);
            for (int i = 0; i < 3000; i++)
            {
                switch (rng.Next(6))
                {
                    case 0:
                        ev.Set();
                        break;
                    case 1:
                        ev.Clear();
                        break;
                    case 2:
                    {
                        using var cts = new CancellationTokenSource();
                        ValueTask wait = ev.WaitAsync(cts.Token);
                        cts.Cancel();
                        try
                        {
                            await wait;
                            Interlocked.Increment(ref succeeded);
                        }
                        catch (OperationCanceledException)
                        {
                            Interlocked.Increment(ref cancelled);
                        }

                        break;
                    }

                    case 3:
                        try
                        {
                            await ev.WaitAsync(TimeSpan.Zero);
                            Interlocked.Increment(ref succeeded);
                        }
                        catch (TimeoutException)
                        {
                            Interlocked.Increment(ref timedOut);
                        }

                        break;
                    default:
                        // Left pending: must complete at some Set, at the latest the final one.
                        waits.Add(ev.WaitAsync().AsTask());
                        break;
                }
            }
        })).ToArray();

        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(30));
        ev.Set();

        await Task.WhenAll(waits).WaitAsync(s_bound);
        ev.Lines.Waiting.Should().Be(0);
        (succeeded + cancelled + timedOut).Should().BeGreaterThan(0);
    }

    /// <summary>Waits <paramref name="times"/> times on a set event with and without a timeout, consuming each
    /// ValueTask synchronously; reports whether all completed synchronously and the bytes this thread allocated.</summary>
    private static (bool AllCompleted, long Allocated) WaitOnSetEvent(AsyncEvent ev, int times)
    {
        bool allCompleted = true;
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < times; i++)
        {
            ValueTask wait = ev.WaitAsync();
            ValueTask timed = ev.WaitAsync(TimeSpan.FromSeconds(1));
            allCompleted &= wait.IsCompletedSuccessfully && timed.IsCompletedSuccessfully;
            wait.GetAwaiter().GetResult();
            timed.GetAwaiter().GetResult();
        }

        return (allCompleted, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    private static async Task<bool> WaitAndReportInline(AsyncEvent ev)
    {
        await ev.WaitAsync();
        return t_insideSet;
    }
}
