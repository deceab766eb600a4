using System.Runtime.CompilerServices;
using AsyncPrimitives.Tests.Support;

namespace AsyncPrimitives.Tests.Internal;

/// <summary>
/// How a waiter (<see cref="AsyncPrimitives.Internal.WaitNode{T}"/>, seen through the <see cref="ValueTask{TResult}"/>
/// an <see cref="AsyncResult{T}"/> wait returns) resumes its awaiter: never inline, on the awaiter's
/// SynchronizationContext or TaskScheduler when it asked for one, in its ExecutionContext only when it asked for
/// that to flow, and with the status (succeeded, canceled, faulted) that matches the outcome.
/// </summary>
public sealed class WaitNodeTests
{
    private static readonly TimeSpan s_hang = TimeSpan.FromSeconds(10);

    private static readonly AsyncLocal<int> s_ambient = new();

    [ThreadStatic]
    private static bool t_insideOnCompleted;

    [Fact]
    public async Task Continuation_WithSynchronizationContext_IsPostedToIt()
    {
        var result = new AsyncResult<int>();
        var context = new CountingContext();
        var resumed = new TaskCompletionSource<SynchronizationContext?>(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask<int> wait = result.GetAsync();

        SynchronizationContext? previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(context);
        try
        {
            wait.GetAwaiter().UnsafeOnCompleted(() => resumed.SetResult(SynchronizationContext.Current));
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        result.Set(5);

        (await resumed.Task.WaitAsync(s_hang)).Should().BeSameAs(context);
        context.Posts.Should().Be(1);
        (await wait).Should().Be(5);
    }

    [Fact]
    public async Task Continuation_WithTaskScheduler_RunsOnThatScheduler()
    {
        var result = new AsyncResult<int>();
        var pair = new ConcurrentExclusiveSchedulerPair();
        var resumed = new TaskCompletionSource<TaskScheduler>(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask<int> wait = result.GetAsync();

        await Task.Factory.StartNew(
            () => wait.GetAwaiter().UnsafeOnCompleted(() => resumed.SetResult(TaskScheduler.Current)),
            CancellationToken.None,
            TaskCreationOptions.None,
            pair.ExclusiveScheduler);

        result.Set(6);

        (await resumed.Task.WaitAsync(s_hang)).Should().BeSameAs(pair.ExclusiveScheduler);
        (await wait).Should().Be(6);
    }

    [Theory]
    [InlineData(true, 42)]
    [InlineData(false, 0)]
    public async Task Continuation_RunsInTheAwaitersExecutionContext_OnlyWhenAskedToFlowIt(bool flow, int expected)
    {
        var result = new AsyncResult<int>();
        var resumed = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask<int> wait = result.GetAsync();

        await Task.Run(() =>
        {
            s_ambient.Value = 42;
            Action record = () => resumed.SetResult(s_ambient.Value);
            ValueTaskAwaiter<int> awaiter = wait.GetAwaiter();
            if (flow)
            {
                awaiter.OnCompleted(record);
            }
            else
            {
                awaiter.UnsafeOnCompleted(record);
            }
        });

        // The releaser's own context must not leak into the waiter's continuation either way.
        await Task.Run(() =>
        {
            s_ambient.Value = 7;
            result.Set(1);
        });

        (await resumed.Task.WaitAsync(s_hang)).Should().Be(expected);
    }

    [Fact]
    public async Task OnCompleted_AfterDelivery_StillRunsTheContinuationAsynchronously()
    {
        var result = new AsyncResult<int>();
        var resumed = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask<int> wait = result.GetAsync();
        result.Set(3);
        wait.IsCompletedSuccessfully.Should().BeTrue();

        // The awaiter registers on the waiter even though it completed: the continuation must still not run inline.
        t_insideOnCompleted = true;
        try
        {
            wait.GetAwaiter().UnsafeOnCompleted(() => resumed.SetResult(t_insideOnCompleted));
        }
        finally
        {
            t_insideOnCompleted = false;
        }

        (await resumed.Task.WaitAsync(s_hang)).Should().BeFalse("the continuation must not run inside OnCompleted");
        (await wait).Should().Be(3);
    }

    [Fact]
    public async Task ValueTask_TouchedAfterItsResult_ThrowsEvenWhileItsNodeServesTheNextWait()
    {
        // The node behind a consumed ValueTask is reused by the next wait: the old ValueTask must be refused (as
        // ValueTask's rules allow), never report or hand over the next wait's outcome.
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> first = gate.AcquireAsync();
        held.Dispose();
        AsyncLock.Releaser firstHeld = await first;

        ValueTask<AsyncLock.Releaser> next = gate.AcquireAsync(); // queued behind firstHeld, on the recycled node
        next.IsCompleted.Should().BeFalse();

        FluentActions.Invoking(() => first.IsCompleted).Should().Throw<InvalidOperationException>();
        FluentActions.Invoking(() => first.GetAwaiter().GetResult()).Should().Throw<InvalidOperationException>();
        next.IsCompleted.Should().BeFalse("the stale ValueTask changed nothing of the wait that uses the node now");

        firstHeld.Dispose();
        (await next.AsTask().WaitAsync(s_hang)).Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task OnCompleted_Twice_Throws()
    {
        var result = new AsyncResult<int>();
        ValueTask<int> wait = result.GetAsync();
        ValueTaskAwaiter<int> awaiter = wait.GetAwaiter();
        awaiter.UnsafeOnCompleted(static () => { });

        Action second = () => awaiter.UnsafeOnCompleted(static () => { });

        second.Should().Throw<InvalidOperationException>();
        result.Set(1);
        (await wait.AsTask().WaitAsync(s_hang)).Should().Be(1);
    }

    [Fact]
    public async Task Status_MatchesTheOutcome_CanceledForCancellation_FaultedForTimeout()
    {
        var time = new FakeTimeProvider();
        var result = new AsyncResult<int>(time);
        using var cts = new CancellationTokenSource();
        ValueTask<int> canceled = result.GetAsync(cts.Token);
        ValueTask<int> timedOut = result.GetAsync(TimeSpan.FromSeconds(1));

        cts.Cancel();
        time.Advance(TimeSpan.FromSeconds(1));

        canceled.IsCanceled.Should().BeTrue();
        timedOut.IsFaulted.Should().BeTrue();
        (await canceled.Invoking(async w => await w).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);
        await timedOut.Invoking(async w => await w).Should().ThrowAsync<TimeoutException>();
    }
}
