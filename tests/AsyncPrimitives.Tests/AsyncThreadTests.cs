using System.Globalization;
using System.Runtime.CompilerServices;
using AsyncPrimitives.Tests.Support;

namespace AsyncPrimitives.Tests;

/// <summary>
/// AsyncThread: one dedicated thread, FIFO work, results and exceptions to each caller alone, cancellation before
/// start, orderly disposal; and a thread-affine resource used through it by many concurrent callers.
/// </summary>
public sealed class AsyncThreadTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task RunAsync_NullWork_ThrowsArgumentNullWithTheParameterName()
    {
        await using var thread = new AsyncThread();
        Call(() => thread.RunAsync((Func<int>)null!)).Should().Throw<ArgumentNullException>().WithParameterName("work");
        Call(() => thread.RunAsync((Action)null!)).Should().Throw<ArgumentNullException>().WithParameterName("work");
    }

    [Fact]
    public async Task ThreadAffineResource_UsedByManyConcurrentCallers_IsOnlyEverCalledOnItsThread()
    {
        await using var thread = new AsyncThread("affine");
        ThreadAffineCounter counter = await thread.RunAsync(() => new ThreadAffineCounter());
        const int Callers = 8;
        const int CallsEach = 200;

        int[][] seen = await Task.WhenAll(Enumerable.Range(0, Callers).Select(caller => Task.Run(async () =>
        {
            var values = new int[CallsEach];
            for (int i = 0; i < CallsEach; i++)
            {
                values[i] = await thread.RunAsync(counter.Next);
            }

            return values;
        }))).WaitAsync(Bound);

        // Every call ran on the resource's thread (it throws otherwise), one at a time: the values are exactly 1..N.
        seen.SelectMany(v => v).Should().BeEquivalentTo(Enumerable.Range(1, Callers * CallsEach));
        seen.Should().OnlyContain(values => values.SequenceEqual(values.Order()), "each caller's calls run in its order");
        FluentActions.Invoking(() => counter.Next()).Should().Throw<InvalidOperationException>("the resource really is thread-affine");
    }

    [Fact]
    public async Task RunAsync_RunsWorkInSubmissionOrder_OnOneThread()
    {
        await using var thread = new AsyncThread();
        var order = new List<int>();
        var threads = new HashSet<int>();

        Task[] runs = Enumerable.Range(0, 100).Select(i => thread.RunAsync(() =>
        {
            order.Add(i);
            threads.Add(Environment.CurrentManagedThreadId);
        })).ToArray();
        await Task.WhenAll(runs).WaitAsync(Bound);

        order.Should().Equal(Enumerable.Range(0, 100));
        threads.Should().ContainSingle().Which.Should().NotBe(Environment.CurrentManagedThreadId);
    }

    [Fact]
    public async Task IsCurrentThread_IsTrueOnlyInsideWork_AndCallersResumeElsewhere()
    {
        await using var thread = new AsyncThread("worker");
        thread.IsCurrentThread.Should().BeFalse();

        (bool inside, string? name) = await thread.RunAsync(() => (thread.IsCurrentThread, Thread.CurrentThread.Name));

        inside.Should().BeTrue();
        name.Should().Be("worker");
        thread.IsCurrentThread.Should().BeFalse("the caller's continuation never runs on the dedicated thread");
        thread.Name.Should().Be("worker");
    }

    [Fact]
    public async Task TheThread_IsABackgroundThread_SoItNeverKeepsTheProcessAlive()
    {
        await using var thread = new AsyncThread();

        (await thread.RunAsync(() => Thread.CurrentThread.IsBackground).WaitAsync(Bound)).Should().BeTrue();
    }

    [Fact]
    public async Task RunAsync_WorkThrowingOperationCanceled_CancelsTheCallWithThatToken()
    {
        await using var thread = new AsyncThread();
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        Task<int> call = thread.RunAsync<int>(() => throw new OperationCanceledException(cts.Token));

        (await FluentActions.Awaiting(() => call.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);
        call.IsCanceled.Should().BeTrue();
    }

    [Fact]
    public async Task RunAsync_WithExecutionContextFlowSuppressed_RunsTheWork()
    {
        await using var thread = new AsyncThread();
        Task<int> call;
        using (ExecutionContext.SuppressFlow())
        {
            call = thread.RunAsync(() => 42);
        }

        (await call.WaitAsync(Bound)).Should().Be(42);
    }

    [Fact]
    public async Task RunAsync_WithALongLivedToken_DoesNotKeepTheWorkAliveOnceItRan()
    {
        await using var thread = new AsyncThread();
        using var longLived = new CancellationTokenSource();
        (WeakReference captured, Task<int> call) = RunCapturing(thread, longLived.Token);
        await call.WaitAsync(Bound);
        await thread.RunAsync(() => 0).WaitAsync(Bound); // the thread has moved on to other work

        CancelledWaitProbe.Collect();

        captured.IsAlive.Should().BeFalse("the token's registration for the work ends when the work starts");
        longLived.IsCancellationRequested.Should().BeFalse();
    }

    [Fact]
    public async Task TheThread_DoesNotKeepItsCreatorsAsyncLocalValuesAlive()
    {
        var payload = new WeakReference[1];
        await using AsyncThread thread = await CreateWithAsyncLocalAsync(payload);
        await thread.RunAsync(() => 0).WaitAsync(Bound); // the thread is running, between work items

        CancelledWaitProbe.Collect();

        payload[0].IsAlive.Should().BeFalse("the thread serves every caller, not the ExecutionContext of its creator");
    }

    [Fact]
    public async Task RunAsync_RacingItsTokensCancellation_EachCallRunsOrIsCancelledAtOnce_NoneIsLeftPending()
    {
        const int Calls = 5000;
        int ran = 0;
        var calls = new Task<int>[Calls];
        await using var thread = new AsyncThread();
        CancellationTokenSource? current = null;
        bool done = false;

        // One thread cancels each token a random moment after it is published, while this one publishes a token and
        // calls with it: cancellations land before the call, inside it (after its first check, before it is queued),
        // while it is queued, and after it started.
        // Between tokens it spins briefly and then yields its core (SpinOnce), rather than spinning hot: on a loaded
        // machine with few cores a hot wait here takes the core the calling thread or the AsyncThread needs.
        var canceller = new Thread(() =>
        {
            var random = new Random(31);
            var idle = default(SpinWait);
            while (!Volatile.Read(ref done))
            {
                if (Volatile.Read(ref current) is { IsCancellationRequested: false } token)
                {
                    Thread.SpinWait(random.Next(256));
                    token.Cancel();
                    idle.Reset();
                }
                else
                {
                    idle.SpinOnce(sleep1Threshold: -1);
                }
            }
        }) { IsBackground = true };
        canceller.Start();
        await StepLoop.RunAsync(step =>
        {
            var tokens = new CancellationTokenSource[Calls];
            try
            {
                for (int i = 0; i < Calls; i++)
                {
                    step();
                    tokens[i] = new CancellationTokenSource();
                    Volatile.Write(ref current, tokens[i]);
                    calls[i] = thread.RunAsync(() => Interlocked.Increment(ref ran), tokens[i].Token);
                    if (!SpinWait.SpinUntil(() => tokens[i].IsCancellationRequested, Bound))
                    {
                        throw new TimeoutException("the cancelling thread stopped");
                    }
                }
            }
            finally
            {
                Volatile.Write(ref done, true);
                canceller.Join(Bound);
                Array.ForEach(tokens, t => t?.Dispose());
            }
        });

        await thread.RunAsync(() => 0).WaitAsync(Bound); // every call queued before it has run by now

        calls.Should().OnlyContain(call => call.IsCompletedSuccessfully || call.IsCanceled, "a call that did not start was cancelled by its token at once");
        calls.Count(call => call.IsCompletedSuccessfully).Should().Be(ran, "a call ran exactly when its caller got a result");
    }

    [Fact]
    public async Task RunAsync_AnExceptionReachesOnlyItsCaller()
    {
        await using var thread = new AsyncThread();
        using var gate = new ManualResetEventSlim();
        Task blocker = thread.RunAsync(() => gate.Wait(Bound));
        Task<int> before = thread.RunAsync(() => 1);
        Task<int> failing = thread.RunAsync<int>(() => throw new FormatException("bad"));
        Task<int> after = thread.RunAsync(() => 3);
        gate.Set();

        (await before.WaitAsync(Bound)).Should().Be(1);
        await FluentActions.Awaiting(() => failing).Should().ThrowAsync<FormatException>().WithMessage("bad");
        (await after.WaitAsync(Bound)).Should().Be(3);
        await blocker;
    }

    [Fact]
    public async Task RunAsync_CancelledBeforeItStarts_IsRemovedAndNeverRuns()
    {
        await using var thread = new AsyncThread();
        using var gate = new ManualResetEventSlim();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task blocker = thread.RunAsync(() =>
        {
            started.SetResult();
            gate.Wait(Bound);
        });
        await started.Task.WaitAsync(Bound);
        using var cts = new CancellationTokenSource();
        bool ran = false;
        Task cancelled = thread.RunAsync(() => ran = true, cts.Token);
        Task<int> next = thread.RunAsync(() => 7);
        thread.ToString().Should().Be("AsyncThread(queued=2)");

        cts.Cancel();

        cancelled.IsCanceled.Should().BeTrue("a token cancelled before the work starts cancels the call at once");
        (await FluentActions.Awaiting(() => cancelled).Should().ThrowAsync<OperationCanceledException>()).Which.CancellationToken.Should().Be(cts.Token);
        thread.ToString().Should().Be("AsyncThread(queued=1)", "the cancelled work left the queue");
        gate.Set();
        (await next.WaitAsync(Bound)).Should().Be(7);
        await blocker;
        ran.Should().BeFalse();
    }

    [Fact]
    public async Task RunAsync_CancelledAfterItStarted_RunsToTheEnd()
    {
        await using var thread = new AsyncThread();
        using var cts = new CancellationTokenSource();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var gate = new ManualResetEventSlim();
        Task<int> running = thread.RunAsync(() =>
        {
            started.SetResult();
            gate.Wait(Bound);
            return 5;
        }, cts.Token);
        await started.Task.WaitAsync(Bound);

        cts.Cancel();
        gate.Set();

        (await running.WaitAsync(Bound)).Should().Be(5);
    }

    [Fact]
    public async Task RunAsync_PreCancelledToken_QueuesNothing()
    {
        await using var thread = new AsyncThread();
        bool ran = false;

        Task run = thread.RunAsync(() => ran = true, new CancellationToken(true));

        run.IsCanceled.Should().BeTrue();
        await thread.RunAsync(() => { }).WaitAsync(Bound); // anything queued before this would have run by now
        ran.Should().BeFalse();
    }

    [Fact]
    public async Task RunAsync_FlowsTheCallersExecutionContext()
    {
        await using var thread = new AsyncThread();
        var local = new AsyncLocal<string> { Value = "caller" };

        (await thread.RunAsync(() => local.Value)).Should().Be("caller");
    }

    [Fact]
    public async Task DisposeAsync_RunsWhatWasQueued_ThenEndsTheThread()
    {
        var thread = new AsyncThread();
        using var gate = new ManualResetEventSlim();
        Thread? worker = null;
        var ran = new List<int>();
        Task blocker = thread.RunAsync(() =>
        {
            worker = Thread.CurrentThread;
            gate.Wait(Bound);
        });
        Task[] queued = Enumerable.Range(0, 5).Select(i => thread.RunAsync(() => ran.Add(i))).ToArray();

        ValueTask disposal = thread.DisposeAsync();
        disposal.IsCompleted.Should().BeFalse("the queued work has not run yet");
        Call(() => thread.RunAsync(() => 1)).Should().Throw<ObjectDisposedException>("disposal refuses new work at once");
        thread.ToString().Should().EndWith(", disposed)");
        gate.Set();
        await disposal.AsTask().WaitAsync(Bound);

        ran.Should().Equal(0, 1, 2, 3, 4);
        queued.Should().OnlyContain(t => t.IsCompletedSuccessfully);
        await blocker;
        worker!.Join(Bound).Should().BeTrue("the thread ends after its last item");
    }

    [Fact]
    public async Task RunAsync_AfterDisposal_ThrowsObjectDisposedException_AndDisposingAgainIsHarmless()
    {
        var thread = new AsyncThread();
        await thread.DisposeAsync();

        Call(() => thread.RunAsync(() => 1)).Should().Throw<ObjectDisposedException>();
        Call(() => thread.RunAsync(() => { })).Should().Throw<ObjectDisposedException>();
        Call(() => thread.RunAsync(() => 1, new CancellationToken(true))).Should().Throw<ObjectDisposedException>();
        await thread.DisposeAsync().AsTask().WaitAsync(Bound);
    }

    [Fact]
    public async Task ManyCallers_WithRandomCancellations_EveryCallRunsOrIsCancelledExactlyOnce()
    {
        await using var thread = new AsyncThread();
        const int Callers = 8;
        const int Calls = 500;
        int ran = 0, completed = 0, cancelled = 0;

        await StepLoop.RunAsync(step => Task.WhenAll(Enumerable.Range(0, Callers).Select(c => Task.Run(async () =>
        {
            var random = new Random(c);
            for (int i = 0; i < Calls; i++)
            {
                step();
                using var cts = new CancellationTokenSource();
                Task<int> call = thread.RunAsync(() => Interlocked.Increment(ref ran), cts.Token);
                if (random.Next(2) == 0)
                {
                    cts.Cancel();
                }

                try
                {
                    await call;
                    Interlocked.Increment(ref completed);
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref cancelled);
                }
            }
        }))));

        (completed + cancelled).Should().Be(Callers * Calls);
        ran.Should().Be(completed, "a call ran exactly when its caller got a result");
        thread.ToString().Should().Be("AsyncThread(queued=0)");
    }

    /// <summary>Runs work that captures a new object; returns a weak reference to it. Not inlined, so no local of the
    /// caller keeps the object alive.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    [Fact]
    public async Task WorkWhoseCallerFlowsNoContext_LeavesNoAsyncLocalValueOrCultureToLaterWork()
    {
        await using var thread = new AsyncThread();
        var local = new AsyncLocal<string?>();
        string threadCulture = await thread.RunAsync(() => CultureInfo.CurrentCulture.Name).WaitAsync(Bound);
        await RunWithoutFlowAsync(thread, () =>
        {
            local.Value = "left by the first caller";
            CultureInfo.CurrentCulture = new CultureInfo(threadCulture == "fr-FR" ? "de-DE" : "fr-FR");
        });

        (await RunWithoutFlowAsync(thread, () => (local.Value, CultureInfo.CurrentCulture.Name)))
            .Should().Be(((string?)null, threadCulture), "work of a caller that flows no context runs in an empty one, as with Task.Run");
        (await thread.RunAsync(() => local.Value).WaitAsync(Bound)).Should().BeNull("a caller's own context has no value either");
    }

    [Fact]
    public async Task WorkWhoseCallerFlowsNoContext_DoesNotKeepWhatItSetAliveOnTheThread()
    {
        await using var thread = new AsyncThread();
        WeakReference payload = await LeaveAnAsyncLocalValueAsync(thread);
        await thread.RunAsync(() => 0).WaitAsync(Bound); // the thread has moved on to other work

        CancelledWaitProbe.Collect();

        payload.IsAlive.Should().BeFalse("the thread keeps nothing of a finished work item");
    }

    private static async Task<T> RunWithoutFlowAsync<T>(AsyncThread thread, Func<T> work)
    {
        Task<T> call;
        using (ExecutionContext.SuppressFlow())
        {
            call = thread.RunAsync(work);
        }

        return await call.WaitAsync(Bound);
    }

    private static Task RunWithoutFlowAsync(AsyncThread thread, Action work) => RunWithoutFlowAsync(thread, () =>
    {
        work();
        return 0;
    });

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<WeakReference> LeaveAnAsyncLocalValueAsync(AsyncThread thread)
    {
        var local = new AsyncLocal<object?>();
        return await RunWithoutFlowAsync(thread, () =>
        {
            object value = new();
            local.Value = value;
            return new WeakReference(value);
        });
    }

    private static (WeakReference Captured, Task<int> Call) RunCapturing(AsyncThread thread, CancellationToken cancellationToken)
    {
        object captured = new();
        return (new WeakReference(captured), thread.RunAsync(() => captured.GetHashCode(), cancellationToken));
    }

    private static readonly AsyncLocal<object?> s_creatorValue = new();

    /// <summary>Creates a thread while an <see cref="AsyncLocal{T}"/> holds a new object; returns the thread and (in
    /// <paramref name="payload"/>) a weak reference to the object. Asynchronous, so that the value is gone from the
    /// caller's ExecutionContext when it returns.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<AsyncThread> CreateWithAsyncLocalAsync(WeakReference[] payload)
    {
        await Task.CompletedTask;
        object value = new();
        payload[0] = new WeakReference(value);
        s_creatorValue.Value = value;
        return new AsyncThread();
    }

    /// <summary>The call itself, so that what it throws synchronously (not its task) is asserted.</summary>
    private static Action Call(Func<Task> call) => () => call();

    /// <summary>A resource that may only be used on the thread that created it, like a SQLite connection or a COM object.</summary>
    private sealed class ThreadAffineCounter
    {
        private readonly int _owner = Environment.CurrentManagedThreadId;
        private int _value;

        public int Next()
        {
            if (Environment.CurrentManagedThreadId != _owner)
            {
                throw new InvalidOperationException("used from another thread");
            }

            return ++_value;
        }
    }

    [Fact]
    public async Task AnIdleThread_DoesNotKeepItsLastWorkItemAlive()
    {
        await using var thread = new AsyncThread("idle");
        WeakReference captured = await RunOneCapturingAsync(thread);

        // The thread finishes the item a moment after its task completes: collect until it is gone, within the bound.
        var bound = System.Diagnostics.Stopwatch.StartNew();
        do
        {
            CancelledWaitProbe.Collect();
            await Task.Yield();
        }
        while (captured.IsAlive && bound.Elapsed < TimeSpan.FromSeconds(10));

        captured.IsAlive.Should().BeFalse("finished work and what it captured are not kept by the idle thread until the next call");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<WeakReference> RunOneCapturingAsync(AsyncThread thread)
    {
        var payload = new byte[1024];
        (await thread.RunAsync(() => payload.Length)).Should().Be(1024);
        return new WeakReference(payload);
    }
}
