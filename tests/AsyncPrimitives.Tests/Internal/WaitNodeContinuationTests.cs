using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;

namespace AsyncPrimitives.Tests.Internal;

/// <summary>
/// How a <see cref="AsyncPrimitives.Internal.WaitNode{T}"/> resumes its awaiter: never inline, on the awaiter's
/// SynchronizationContext or TaskScheduler when it asked for one, in its ExecutionContext only when it asked for
/// that to flow, and with the status (succeeded, canceled, faulted) that matches the outcome.
/// </summary>
public sealed class WaitNodeContinuationTests
{
    private static readonly TimeSpan s_hang = TimeSpan.FromSeconds(10);

    private static readonly AsyncLocal<int> s_ambient = new();

    [ThreadStatic]
    private static bool t_insideOnCompleted;

    [Fact]
    public async Task Continuation_WithSynchronizationContext_IsPostedToIt()
    {
        var engine = new Engine();
        var context = new CountingContext();
        var resumed = new TaskCompletionSource<SynchronizationContext?>(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask<int> wait = engine.Wait(payload: 0);

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

        engine.GrantAll(5);

        (await resumed.Task.WaitAsync(s_hang)).Should().BeSameAs(context);
        context.Posts.Should().Be(1);
        (await wait).Should().Be(5);
    }

    [Fact]
    public async Task Continuation_WithTaskScheduler_RunsOnThatScheduler()
    {
        var engine = new Engine();
        var pair = new ConcurrentExclusiveSchedulerPair();
        var resumed = new TaskCompletionSource<TaskScheduler>(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask<int> wait = engine.Wait(payload: 0);

        await Task.Factory.StartNew(
            () => wait.GetAwaiter().UnsafeOnCompleted(() => resumed.SetResult(TaskScheduler.Current)),
            CancellationToken.None,
            TaskCreationOptions.None,
            pair.ExclusiveScheduler);

        engine.GrantAll(6);

        (await resumed.Task.WaitAsync(s_hang)).Should().BeSameAs(pair.ExclusiveScheduler);
        (await wait).Should().Be(6);
    }

    [Theory]
    [InlineData(true, 42)]
    [InlineData(false, 0)]
    public async Task Continuation_RunsInTheAwaitersExecutionContext_OnlyWhenAskedToFlowIt(bool flow, int expected)
    {
        var engine = new Engine();
        var resumed = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask<int> wait = engine.Wait(payload: 0);

        await Task.Run(() =>
        {
            s_ambient.Value = 42;
            Action record = () => resumed.SetResult(s_ambient.Value);
            ConfiguredValueTaskAwaitable<int>.ConfiguredValueTaskAwaiter awaiter = wait.ConfigureAwait(false).GetAwaiter();
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
            engine.GrantAll(1);
        });

        (await resumed.Task.WaitAsync(s_hang)).Should().Be(expected);
    }

    [Fact]
    public async Task OnCompleted_AfterDelivery_StillRunsTheContinuationAsynchronously()
    {
        var engine = new Engine();
        var resumed = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask<int> wait = engine.Wait(payload: 0);
        engine.GrantAll(3);

        IValueTaskSource<int> source = SourceOf(wait, out short token);
        source.GetStatus(token).Should().Be(ValueTaskSourceStatus.Succeeded);
        t_insideOnCompleted = true;
        try
        {
            source.OnCompleted(_ => resumed.SetResult(t_insideOnCompleted), null, token, ValueTaskSourceOnCompletedFlags.None);
        }
        finally
        {
            t_insideOnCompleted = false;
        }

        (await resumed.Task.WaitAsync(s_hang)).Should().BeFalse("the continuation must not run inside OnCompleted");
        (await wait).Should().Be(3);
    }

    [Fact]
    public async Task OnCompleted_Twice_Throws()
    {
        var engine = new Engine();
        ValueTask<int> wait = engine.Wait(payload: 0);
        IValueTaskSource<int> source = SourceOf(wait, out short token);
        source.OnCompleted(static _ => { }, null, token, ValueTaskSourceOnCompletedFlags.None);

        Action second = () => source.OnCompleted(static _ => { }, null, token, ValueTaskSourceOnCompletedFlags.None);

        second.Should().Throw<InvalidOperationException>();
        engine.GrantAll(1);
        (await wait.AsTask().WaitAsync(s_hang)).Should().Be(1);
    }

    [Fact]
    public async Task Status_MatchesTheOutcome_CanceledForCancellation_FaultedForTimeout()
    {
        var engine = new Engine();
        using var cts = new CancellationTokenSource();
        ValueTask<int> canceled = engine.Wait(payload: 0, cancellationToken: cts.Token);
        ValueTask<int> timedOut = engine.Wait(payload: 1, timeout: TimeSpan.FromSeconds(1));

        cts.Cancel();
        engine.Time.Advance(TimeSpan.FromSeconds(1));

        canceled.IsCanceled.Should().BeTrue();
        timedOut.IsFaulted.Should().BeTrue();
        (await canceled.Invoking(async w => await w).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);
        await timedOut.Invoking(async w => await w).Should().ThrowAsync<TimeoutException>();
    }

    private static IValueTaskSource<int> SourceOf(ValueTask<int> wait, out short token)
    {
        // ValueTask<T> keeps its source and token in private fields; the test needs the raw source to drive
        // OnCompleted with explicit flags.
        Type type = typeof(ValueTask<int>);
        object boxed = wait;
        token = (short)type.GetField("_token", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!.GetValue(boxed)!;
        return (IValueTaskSource<int>)type.GetField("_obj", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!.GetValue(boxed)!;
    }

    /// <summary>Runs posted work on the thread pool with itself as the current context, counting posts.</summary>
    private sealed class CountingContext : SynchronizationContext
    {
        private int _posts;

        public int Posts => Volatile.Read(ref _posts);

        public override void Post(SendOrPostCallback d, object? state)
        {
            Interlocked.Increment(ref _posts);
            ThreadPool.QueueUserWorkItem(_ =>
            {
                SetSynchronizationContext(this);
                try
                {
                    d(state);
                }
                finally
                {
                    SetSynchronizationContext(null);
                }
            });
        }
    }
}
