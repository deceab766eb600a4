namespace AsyncIterTools.Tests;

/// <summary>
/// A piece of work or a source item completing on some other thread never runs the operator's loop, or the consumer,
/// inline inside that completion: the operator hands over asynchronously. (Otherwise a producer completing a
/// TaskCompletionSource would find itself running the consumer's loop body, the next selector call and so on, on its
/// own stack and possibly under its own locks.)
/// </summary>
public sealed class InlineContinuationTests
{
    [ThreadStatic]
    private static bool t_insideCompletion;

    public static TheoryData<string> Operators => new()
    {
        "Merge", "Map", "MapUnordered", "Map(async source)", "MapUnordered(async source)", "AsCompleted", "Prefetch", "BatchTimed", "GatherAsync",
    };

    [Theory, MemberData(nameof(Operators))]
    public Task CompletingWorkOnItsThread_NeverRunsTheConsumerInline(string op) => Task.Run(async () =>
    {
        // Task.Run: no SynchronizationContext, so only the operator's own hand-off stands between the completion and
        // the consumer. The gate runs its continuations synchronously, inside SetResult.
        var gate = new TaskCompletionSource<bool>();
        var reached = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var observed = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        Func<Task> finish;
        if (op == "GatherAsync")
        {
            Task<int[]> gathered = AsyncIter.GatherAsync(new Func<CancellationToken, Task<int>>[] { _ => AfterGateAsync(gate.Task, reached) });
            gathered.IsCompleted.Should().BeFalse();
            _ = gathered.ContinueWith(_ => observed.SetResult(t_insideCompletion), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            finish = async () => (await gathered).Should().Equal(1);
        }
        else
        {
            IAsyncEnumerator<int> e = Build(op, gate.Task, reached).GetAsyncEnumerator();
            ValueTask<bool> move = e.MoveNextAsync();
            move.IsCompleted.Should().BeFalse();
            move.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(() => observed.SetResult(t_insideCompletion));
            finish = async () =>
            {
                move.GetAwaiter().GetResult().Should().BeTrue();
                e.Current.Should().Be(1);
                await e.DisposeAsync();
            };
        }

        // Prefetch and the timed Batch read the source on their own task: make sure it is parked on the gate.
        await reached.Task.WaitAsync(TestWork.Bound);
        t_insideCompletion = true;
        try
        {
            gate.SetResult(true);
        }
        finally
        {
            t_insideCompletion = false;
        }

        (await observed.Task.WaitAsync(TestWork.Bound)).Should().BeFalse("the consumer resumes on its own, not inside the completion");
        await finish();
    });

    /// <summary>A wait that ends without a completion (the caller's token cancelled, AsCompleted's deadline passed)
    /// resumes the consumer from the pool as well: never inside the caller's <c>Cancel()</c> or the deadline's timer
    /// callback (here <c>FakeTimeProvider.Advance</c>), where the consumer's code would run on their stack.</summary>
    [Theory]
    [InlineData("tasks, cancelled")]
    [InlineData("tasks, deadline")]
    [InlineData("work, deadline")]
    public Task EndingAsCompletedsWait_NeverRunsTheConsumerInline(string how) => Task.Run(async () =>
    {
        var never = new TaskCompletionSource<int>();
        var time = new FakeTimeProvider();
        using var cts = new CancellationTokenSource();
        IAsyncEnumerable<int> results = how switch
        {
            "tasks, cancelled" => AsyncIter.AsCompleted([never.Task]),
            "tasks, deadline" => AsyncIter.AsCompleted([never.Task], TimeSpan.FromSeconds(1), time),
            _ => AsyncIter.AsCompleted([(CancellationToken ct) => never.Task.WaitAsync(ct)], null, TimeSpan.FromSeconds(1), time),
        };
        IAsyncEnumerator<int> e = results.GetAsyncEnumerator(cts.Token);
        ValueTask<bool> move = e.MoveNextAsync();
        move.IsCompleted.Should().BeFalse();
        var observed = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        move.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(() => observed.SetResult(t_insideCompletion));

        t_insideCompletion = true;
        try
        {
            if (how == "tasks, cancelled")
            {
                cts.Cancel();
            }
            else
            {
                time.Advance(TimeSpan.FromSeconds(1));
            }
        }
        finally
        {
            t_insideCompletion = false;
        }

        (await observed.Task.WaitAsync(TestWork.Bound)).Should().BeFalse("the consumer resumes on its own, not inside Cancel() or the timer's callback");
        FluentActions.Invoking(() => move.GetAwaiter().GetResult())
            .Should().Throw<Exception>().Which.Should().BeAssignableTo(how == "tasks, cancelled" ? typeof(OperationCanceledException) : typeof(TimeoutException));
        await e.DisposeAsync();
    });

    private static IAsyncEnumerable<int> Build(string op, Task gate, TaskCompletionSource<bool> reached) => op switch
    {
        "Merge" => AsyncIter.Merge(AfterGate(gate, reached)),
        "Map" => Sources.Of(SourceMode.Synchronous, 0).Map((_, _) => new ValueTask<int>(AfterGateAsync(gate, reached)), 2),
        "MapUnordered" => Sources.Of(SourceMode.Synchronous, 0).MapUnordered((_, _) => new ValueTask<int>(AfterGateAsync(gate, reached)), 2),
        "Map(async source)" => AfterGate(gate, reached).Map((x, _) => new ValueTask<int>(x), 2),
        "MapUnordered(async source)" => AfterGate(gate, reached).MapUnordered((x, _) => new ValueTask<int>(x), 2),
        "AsCompleted" => AsyncIter.AsCompleted(new Func<CancellationToken, Task<int>>[] { _ => AfterGateAsync(gate, reached) }),
        "Prefetch" => AfterGate(gate, reached).Prefetch(2),
        "BatchTimed" => AfterGate(gate, reached).Batch(1, TimeSpan.FromHours(1)).Select(b => b[0]),
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    private static async IAsyncEnumerable<int> AfterGate(Task gate, TaskCompletionSource<bool> reached)
    {
        reached.TrySetResult(true);
        await gate.ConfigureAwait(false);
        yield return 1;
    }

    private static async Task<int> AfterGateAsync(Task gate, TaskCompletionSource<bool> reached)
    {
        reached.TrySetResult(true);
        await gate.ConfigureAwait(false);
        return 1;
    }
}
