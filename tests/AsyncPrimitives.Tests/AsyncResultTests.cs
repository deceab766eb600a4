using AsyncPrimitives.Tests.Support;
using static AsyncPrimitives.Tests.Support.Settle;

namespace AsyncPrimitives.Tests;

/// <summary>
/// AsyncResult&lt;T&gt;: the behaviour Toro's test_async_result.py checks (set/get in either order, AlreadySet,
/// NotReady, timeouts), plus failure results, cancellation, no inline continuations and no allocation when set.
/// </summary>
public sealed class AsyncResultTests
{
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(10);

    /// <summary>True only on the test's own thread while it is inside Set(): a continuation that sees it ran inline.</summary>
    [ThreadStatic]
    private static bool t_insideSet;

    [Fact]
    public async Task Set_ThenGet_ReturnsTheValueSynchronously()
    {
        var result = new AsyncResult<string>();
        result.IsSet.Should().BeFalse();

        result.Set("hello");

        result.IsSet.Should().BeTrue();
        ValueTask<string> get = result.GetAsync();
        get.IsCompletedSuccessfully.Should().BeTrue();
        (await get).Should().Be("hello");
        (await result.GetAsync(TimeSpan.FromSeconds(1))).Should().Be("hello");
        (await result.GetAsync()).Should().Be("hello", "every later get returns the value too");
    }

    [Fact]
    public void GetAsync_WhenSet_AllocatesNothing()
    {
        var result = new AsyncResult<int>();
        result.Set(42);
        GetSetResult(result, 1); // warm up

        (bool allCompleted, long sum, long allocated) = GetSetResult(result, 100);

        allCompleted.Should().BeTrue();
        sum.Should().Be(42 * 200);
        allocated.Should().Be(0);
    }

    [Fact]
    public async Task GetAsync_ThenSet_CompletesEveryWaiterWithTheValue()
    {
        var result = new AsyncResult<int>();
        Task<int>[] getters = Enumerable.Range(0, 50).Select(_ => result.GetAsync().AsTask()).ToArray();
        getters.Should().OnlyContain(t => !t.IsCompleted);
        result.Lines.Waiting.Should().Be(50);

        result.Set(7);

        (await Task.WhenAll(getters).WaitAsync(s_bound)).Should().OnlyContain(v => v == 7);
        result.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public void Set_Twice_ThrowsInvalidOperationAndKeepsTheFirstValue()
    {
        var result = new AsyncResult<string>();
        result.Set("first");

        // The message says why (Toro's AlreadySet), whichever way the second call tries to set it.
        FluentActions.Invoking(() => result.Set("second")).Should().Throw<InvalidOperationException>()
            .WithMessage("*already set*");
        FluentActions.Invoking(() => result.SetException(new InvalidCastException())).Should().Throw<InvalidOperationException>()
            .WithMessage("*already set*");

        result.TryGet(out string? value).Should().BeTrue();
        value.Should().Be("first");
    }

    [Fact]
    public void TrySet_SecondTime_ReturnsFalseAndChangesNothing()
    {
        var result = new AsyncResult<int>();

        result.TrySet(1).Should().BeTrue();
        result.TrySet(2).Should().BeFalse();
        result.TrySetException(new InvalidCastException()).Should().BeFalse();

        result.TryGet(out int value).Should().BeTrue();
        value.Should().Be(1);
    }

    [Fact]
    public void TrySet_AfterSetException_ReturnsFalse()
    {
        var result = new AsyncResult<int>();
        result.SetException(new InvalidCastException());

        result.TrySet(1).Should().BeFalse();
        FluentActions.Invoking(() => result.Set(1)).Should().Throw<InvalidOperationException>();
        FluentActions.Invoking(() => result.TryGet(out _)).Should().Throw<InvalidCastException>();
    }

    [Fact]
    public async Task SetException_EveryCurrentAndLaterGetterThrowsThatException()
    {
        var result = new AsyncResult<int>();
        Task<int>[] early = Enumerable.Range(0, 5).Select(_ => result.GetAsync().AsTask()).ToArray();
        var failure = new InvalidCastException("boom");

        result.SetException(failure);

        result.IsSet.Should().BeTrue();
        foreach (Task<int> getter in early)
        {
            (await ThrowsSoon<InvalidCastException>(getter)).Message.Should().Be("boom");
        }

        await FluentActions.Awaiting(() => result.GetAsync().AsTask()).Should().ThrowAsync<InvalidCastException>();
        await FluentActions.Awaiting(() => result.GetAsync(TimeSpan.FromSeconds(1)).AsTask()).Should().ThrowAsync<InvalidCastException>();
        FluentActions.Invoking(() => result.TryGet(out _)).Should().Throw<InvalidCastException>().Which.Message.Should().Be("boom");
        result.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task SetException_EveryGetterRethrowsItAsSet_NeverWithAnotherGettersThrow()
    {
        var result = new AsyncResult<int>();
        ValueTask<int>[] early = Enumerable.Range(0, 20).Select(_ => result.GetAsync()).ToArray();
        result.SetException(Thrown(new InvalidCastException("boom"))); // as a caught exception is: with its trace

        // Each waiter's outcome is read here, one after another (a shared exception thrown on several threads at once
        // can show one thread's frames to another, as a faulted Task awaited on several threads can).
        var earlyRethrows = new List<int>();
        foreach (ValueTask<int> getter in early)
        {
            getter.IsCompleted.Should().BeTrue("setting the result gave every waiter its outcome");
            earlyRethrows.Add(Traces.Rethrows(await ThrowsSoon<InvalidCastException>(getter.AsTask())));
        }

        var laterRethrows = new List<int>();
        for (int i = 0; i < 20; i++)
        {
            Task<int> later = (i % 2 == 0 ? result.GetAsync() : result.GetAsync(TimeSpan.FromSeconds(1))).AsTask();
            laterRethrows.Add(Traces.Rethrows(await ThrowsSoon<InvalidCastException>(later)));
        }

        earlyRethrows.Distinct().Should().ContainSingle("each waiter's trace is the exception's as set plus its own throw");
        laterRethrows.Distinct().Should().ContainSingle("each later getter's trace is the exception's as set plus its own throw");
    }

    [Fact]
    public async Task SetException_AFailureEveryGetterObserved_NeverReachesUnobservedTaskException()
    {
        // A result failed while a getter waited; the getter observed the failure, and nobody got the result afterwards.
        // Nothing the library made for the failure may then report it to TaskScheduler.UnobservedTaskException.
        List<Exception> unobserved = await UnobservedFailures.AfterAsync<ResultFailure>(FailAResultItsWaiterObservesAsync);

        unobserved.Should().BeEmpty("the failure was observed by the getter it was given to; nothing else was asked for");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task FailAResultItsWaiterObservesAsync()
    {
        var result = new AsyncResult<int>();
        Task<int> waiter = result.GetAsync().AsTask();
        result.SetException(new ResultFailure());
        await ThrowsSoon<ResultFailure>(waiter);
    }

    /// <summary>The failure of <see cref="FailAResultItsWaiterObservesAsync"/>, told apart from other tests' exceptions.</summary>
    private sealed class ResultFailure() : Exception("the result failed");

    [Fact]
    public void SetException_Null_ThrowsArgumentNullWithParamName()
    {
        var result = new AsyncResult<int>();

        FluentActions.Invoking(() => result.SetException(null!))
            .Should().Throw<ArgumentNullException>().Which.ParamName.Should().Be("exception");
        FluentActions.Invoking(() => result.TrySetException(null!))
            .Should().Throw<ArgumentNullException>().Which.ParamName.Should().Be("exception");
        result.IsSet.Should().BeFalse();
    }

    [Fact]
    public void TryGet_WhenUnset_ReturnsFalse()
    {
        // Toro's get_nowait raises NotReady.
        var result = new AsyncResult<string>();

        result.TryGet(out string? value).Should().BeFalse();
        value.Should().BeNull();
    }

    [Fact]
    public void TryGet_WhenSet_ReturnsTheValue()
    {
        var result = new AsyncResult<string>();
        result.Set("hello");

        result.TryGet(out string? value).Should().BeTrue();
        value.Should().Be("hello");
    }

    [Fact]
    public async Task GetAsync_Timeout_ThrowsTimeoutAndALaterSetStillWorksForOthers()
    {
        var time = new CountingTimeProvider();
        var result = new AsyncResult<string>(time);
        Task<string> timed = result.GetAsync(TimeSpan.FromSeconds(1)).AsTask();
        Task<string> patient = result.GetAsync().AsTask();

        time.Advance(TimeSpan.FromMilliseconds(999));
        timed.IsCompleted.Should().BeFalse();
        time.Advance(TimeSpan.FromMilliseconds(1));

        await ThrowsSoon<TimeoutException>(timed);
        result.IsSet.Should().BeFalse();
        result.Lines.Waiting.Should().Be(1);
        time.ActiveTimers.Should().Be(0);

        result.Set("foo");
        (await patient.WaitAsync(s_bound)).Should().Be("foo");
        (await result.GetAsync(TimeSpan.FromMilliseconds(10))).Should().Be("foo");
    }

    [Fact]
    public async Task GetAsync_SetBeforeTimeout_ReturnsTheValue()
    {
        var time = new CountingTimeProvider();
        var result = new AsyncResult<int>(time);
        Task<int> get = result.GetAsync(TimeSpan.FromSeconds(1)).AsTask();

        time.Advance(TimeSpan.FromMilliseconds(500));
        result.Set(3);

        (await get.WaitAsync(s_bound)).Should().Be(3);
        time.Advance(TimeSpan.FromSeconds(1));
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task GetAsync_ZeroTimeout_ReturnsWhenSetAndTimesOutAtOnceWhenUnset()
    {
        var time = new CountingTimeProvider();
        var result = new AsyncResult<int>(time);

        ValueTask<int> unset = result.GetAsync(TimeSpan.Zero);
        unset.IsFaulted.Should().BeTrue();
        unset.AsTask().Exception!.InnerException.Should().BeOfType<TimeoutException>();
        result.Lines.Waiting.Should().Be(0);
        time.TimerCreations.Should().Be(0);

        result.Set(5);
        ValueTask<int> set = result.GetAsync(TimeSpan.Zero);
        set.IsCompletedSuccessfully.Should().BeTrue();
        (await set).Should().Be(5);
    }

    [Fact]
    public async Task GetAsync_PreCancelledToken_FailsAtOnceEvenIfSet()
    {
        var result = new AsyncResult<int>();
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        result.GetAsync(cts.Token).IsCanceled.Should().BeTrue();
        result.Lines.Waiting.Should().Be(0);
        result.Set(1);
        ValueTask<int> get = result.GetAsync(cts.Token);
        get.IsCanceled.Should().BeTrue();
        result.GetAsync(TimeSpan.FromSeconds(1), cts.Token).IsCanceled.Should().BeTrue();
        await FluentActions.Awaiting(() => get.AsTask()).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task GetAsync_CancelledWhileWaiting_ThrowsAndLeavesTheResultAndOthersAlone()
    {
        var result = new AsyncResult<int>();
        using var cts = new CancellationTokenSource();
        Task<int> cancelled = result.GetAsync(cts.Token).AsTask();
        Task<int> other = result.GetAsync().AsTask();

        cts.Cancel();

        (await ThrowsSoon<OperationCanceledException>(cancelled)).CancellationToken.Should().Be(cts.Token);
        result.IsSet.Should().BeFalse();
        result.Lines.Waiting.Should().Be(1);
        result.Set(9);
        (await other.WaitAsync(s_bound)).Should().Be(9);
    }

    public static TheoryData<TimeSpan> InvalidTimeouts => new()
    {
        TimeSpan.FromMilliseconds(-2),
        TimeSpan.FromTicks(-1),
        TimeSpan.MinValue,
        TimeSpan.MaxValue,
    };

    [Theory]
    [MemberData(nameof(InvalidTimeouts))]
    public void GetAsync_InvalidTimeout_ThrowsArgumentOutOfRange(TimeSpan timeout)
    {
        var result = new AsyncResult<int>();
        result.Set(1);

        FluentActions.Invoking(() => result.GetAsync(timeout))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
    }

    [Fact]
    public async Task Set_NeverRunsAWaitersContinuationInline()
    {
        var result = new AsyncResult<int>();
        Task<bool> waiter = GetAndReportInline(result);

        t_insideSet = true;
        try
        {
            result.Set(1);
        }
        finally
        {
            t_insideSet = false;
        }

        (await waiter.WaitAsync(s_bound)).Should().BeFalse("Set must not run the getter's continuation on its own stack");
    }

    [Fact]
    public async Task SetException_NeverRunsAWaitersContinuationInline()
    {
        var result = new AsyncResult<int>();
        Task<bool> waiter = GetAndReportInline(result);

        t_insideSet = true;
        try
        {
            result.SetException(new InvalidCastException());
        }
        finally
        {
            t_insideSet = false;
        }

        (await waiter.WaitAsync(s_bound)).Should().BeFalse("SetException must not run the getter's continuation on its own stack");
    }

    [Fact]
    public async Task ToString_ShowsTheState()
    {
        var unset = new AsyncResult<string>();
        unset.ToString().Should().Be("AsyncResult(unset, waiters=0)");

        // Toro's test_str: the waiters show while the result is unset.
        Task<string> getter = unset.GetAsync().AsTask();
        unset.ToString().Should().Be("AsyncResult(unset, waiters=1)");

        unset.Set("fizzle");
        unset.ToString().Should().Be("AsyncResult(value=fizzle)");

        var failed = new AsyncResult<string>();
        failed.SetException(new InvalidCastException());
        failed.ToString().Should().Be("AsyncResult(error=InvalidCastException)");
        (await getter.WaitAsync(s_bound)).Should().Be("fizzle");
    }

    [Fact]
    public void ToString_WithAName_ShowsItFirst()
    {
        var config = new AsyncResult<int> { Name = "config" };
        config.Name.Should().Be("config");
        config.ToString().Should().Be("AsyncResult(name=\"config\", unset, waiters=0)");
        config.Set(42);
        config.ToString().Should().Be("AsyncResult(name=\"config\", value=42)");
        new AsyncResult<int>().Name.Should().BeNull();
    }

    [Fact]
    public async Task CancellationRacingSet_EveryGetterGetsTheValueOrIsCancelled()
    {
        for (int round = 0; round < 200; round++)
        {
            var result = new AsyncResult<int>();
            var sources = Enumerable.Range(0, 8).Select(_ => new CancellationTokenSource()).ToArray();
            Task<int>[] getters = sources.Select(cts => result.GetAsync(cts.Token).AsTask()).ToArray();

            Task cancel = Task.Run(() =>
            {
                foreach (CancellationTokenSource cts in sources)
                {
                    cts.Cancel();
                }
            });
            result.Set(round);
            await cancel.WaitAsync(s_bound);

            foreach (Task<int> getter in getters)
            {
                await FinishesAsync(getter);
                if (getter.IsCompletedSuccessfully)
                {
                    (await getter).Should().Be(round);
                }
                else
                {
                    getter.IsCanceled.Should().BeTrue();
                }
            }

            result.Lines.Waiting.Should().Be(0);
            foreach (CancellationTokenSource cts in sources)
            {
                cts.Dispose();
            }
        }
    }

    /// <summary>Gets a set result <paramref name="times"/> times with and without a timeout, consuming each ValueTask
    /// synchronously; reports whether all completed synchronously, their sum, and the bytes this thread allocated.</summary>
    private static (bool AllCompleted, long Sum, long Allocated) GetSetResult(AsyncResult<int> result, int times)
    {
        bool allCompleted = true;
        long sum = 0;
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < times; i++)
        {
            ValueTask<int> get = result.GetAsync();
            ValueTask<int> timed = result.GetAsync(TimeSpan.FromSeconds(1));
            allCompleted &= get.IsCompletedSuccessfully && timed.IsCompletedSuccessfully;
            sum += get.GetAwaiter().GetResult() + timed.GetAwaiter().GetResult();
        }

        return (allCompleted, sum, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    private static async Task<bool> GetAndReportInline(AsyncResult<int> result)
    {
        try
        {
            await result.GetAsync();
        }
        catch (InvalidCastException)
        {
        }

        return t_insideSet;
    }

    private static Exception Thrown(Exception exception)
    {
        try
        {
            throw exception;
        }
        catch (Exception e)
        {
            return e;
        }
    }
}
