namespace AsyncPrimitives.Tests;

/// <summary>
/// A time provider is user code: when it fails (a timer it cannot create, a timer that fails to stop) or its
/// timestamps step back, nothing is lost. A timed wait whose timer cannot be created fails with the provider's
/// exception and leaves the line holding nothing, as a cancelled wait does; a granted wait keeps its grant whatever its
/// timer's <c>Dispose</c> throws; an overall timeout is never lengthened by a clock that steps back.
/// </summary>
public sealed class TimeProviderFailureTests
{
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task LockAcquire_TimerCannotBeCreated_FailsAndLeavesTheLine_TheNextReleaseGoesToTheNextAcquire()
    {
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        var gate = new AsyncLock(time);
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();

        await FluentActions.Awaiting(async () => await gate.AcquireAsync(TimeSpan.FromSeconds(1)))
            .Should().ThrowAsync<InvalidOperationException>().WithMessage("The clock cannot create a timer.");
        gate.Lines.Waiting.Should().Be(0);

        held.Dispose();
        gate.IsLocked.Should().BeFalse("the released permit must not go to a wait whose caller saw it fail");
        time.CreateTimerThrows = false;
        (await gate.AcquireAsync(TimeSpan.FromSeconds(1)).AsTask().WaitAsync(s_bound)).Dispose();
    }

    [Fact]
    public async Task KeyedLockAcquire_TimerCannotBeCreated_FailsAndTheKeyIsForgottenOnRelease()
    {
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        var keyed = new AsyncKeyedLock<string>(timeProvider: time);
        keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser held).Should().BeTrue();

        await FluentActions.Awaiting(async () => await keyed.AcquireAsync("k", TimeSpan.FromSeconds(1)))
            .Should().ThrowAsync<InvalidOperationException>();

        held.Dispose();
        keyed.IsHeld("k").Should().BeFalse();
        keyed.KeyCount.Should().Be(0);
    }

    [Fact]
    public async Task WriteAcquire_TimerCannotBeCreated_FailsAndDoesNotKeepReadersOut()
    {
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        var rw = new AsyncReaderWriterLock(timeProvider: time);
        rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser reader).Should().BeTrue();

        await FluentActions.Awaiting(async () => await rw.AcquireWriteAsync(TimeSpan.FromSeconds(1)))
            .Should().ThrowAsync<InvalidOperationException>();

        rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser second).Should().BeTrue("no writer waits: the one that failed left");
        second.Dispose();
        reader.Dispose();
        rw.IsWriteLockHeld.Should().BeFalse();
    }

    [Fact]
    public async Task QueuePut_TimerCannotBeCreated_FailsWithoutEnqueuingItsItem()
    {
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        var queue = new AsyncQueue<int>(maxSize: 1, timeProvider: time);
        queue.TryPut(1).Should().BeTrue();

        await FluentActions.Awaiting(async () => await queue.PutAsync(2, TimeSpan.FromSeconds(1)))
            .Should().ThrowAsync<InvalidOperationException>();

        queue.TryGet(out int first).Should().BeTrue();
        first.Should().Be(1);
        queue.TryGet(out int second).Should().BeFalse($"the failed put's item must not be enqueued (got {second})");
        queue.UnfinishedTasks.Should().Be(1);
    }

    [Fact]
    public async Task QueueGet_TimerCannotBeCreated_FailsWithoutTakingTheNextItem()
    {
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        var queue = new AsyncQueue<int>(timeProvider: time);

        await FluentActions.Awaiting(async () => await queue.GetAsync(TimeSpan.FromSeconds(1)))
            .Should().ThrowAsync<InvalidOperationException>();

        await queue.PutAsync(42);
        queue.TryGet(out int item).Should().BeTrue("the item must not go to a get whose caller saw it fail");
        item.Should().Be(42);
    }

    [Fact]
    public async Task ConditionWait_TimerCannotBeCreated_FailsHoldingTheLock_AndANotifyReachesNoOne()
    {
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        var condition = new AsyncCondition(timeProvider: time);
        using (await condition.AcquireAsync())
        {
            await FluentActions.Awaiting(async () => await condition.WaitAsync(TimeSpan.FromSeconds(1)))
                .Should().ThrowAsync<InvalidOperationException>();
            condition.IsLocked.Should().BeTrue("a failed wait holds the lock again");
            condition.Lines.Waiting.Should().Be(0);
            condition.Notify();
        }

        condition.IsLocked.Should().BeFalse("no failed wait may take the lock and keep it");
        time.CreateTimerThrows = false;
        (await condition.AcquireAsync(TimeSpan.FromSeconds(1)).AsTask().WaitAsync(s_bound)).Dispose();
    }

    [Fact]
    public async Task SemaphoreAcquire_TimerFailsToStop_TheGrantedWaitStillGetsItsPermit()
    {
        var time = new MisbehavingTimeProvider { TimerDisposeThrows = true };
        var semaphore = new AsyncSemaphore(0, timeProvider: time);
        ValueTask<AsyncSemaphore.Releaser> wait = semaphore.AcquireAsync(TimeSpan.FromHours(1));
        semaphore.Release();

        AsyncSemaphore.Releaser releaser = await wait.AsTask().WaitAsync(s_bound);
        semaphore.CurrentCount.Should().Be(0);
        releaser.Dispose();
        semaphore.CurrentCount.Should().Be(1);
    }

    [Fact]
    public async Task ConditionWaitUntil_ClockSteppingBack_NeverWaitsLongerThanTheTimeout()
    {
        var time = new MisbehavingTimeProvider(firstReadingAhead: TimeSpan.FromHours(1));
        var condition = new AsyncCondition(timeProvider: time);
        await condition.AcquireAsync();
        Task wait = condition.WaitUntilAsync(() => false, TimeSpan.FromSeconds(10)).AsTask();

        (await time.FirstDueTime.WaitAsync(s_bound)).Should().BeLessThanOrEqualTo(
            TimeSpan.FromSeconds(10), "WaitUntilAsync waits for at most its timeout in all, however the timestamps move");
        time.Advance(TimeSpan.FromSeconds(10));
        await FluentActions.Awaiting(() => wait.WaitAsync(s_bound)).Should().ThrowAsync<TimeoutException>();
        condition.Release();
    }
}
