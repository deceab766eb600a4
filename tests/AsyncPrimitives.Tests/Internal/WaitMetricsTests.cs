using System.Diagnostics;
using System.Diagnostics.Metrics;
using AsyncPrimitives.Internal;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace AsyncPrimitives.Tests.Internal;

/// <summary>
/// The "AsyncPrimitives" meter (DESIGN.md, Metrics), recorded by the wait engine: <c>asynctools.wait.duration</c> for
/// every wait that had to queue, with its outcome; <c>asynctools.waiters</c> up while a wait queues, down when it ends;
/// <c>asynctools.queue.depth</c> for each named queue; <see cref="AsyncThread"/> meters its calls' wait for the thread
/// the same way. Tags: <c>asynctools.kind</c> (no generic arity),
/// <c>asynctools.name</c> (only when named), <c>asynctools.outcome</c>.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public sealed class WaitMetricsTests : IDisposable
{
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(10);

    private readonly MetricCollector<double> _durations = new(null, "AsyncPrimitives", "asynctools.wait.duration");
    private readonly MetricCollector<long> _waiters = new(null, "AsyncPrimitives", "asynctools.waiters");
    private readonly MetricCollector<long> _depth = new(null, "AsyncPrimitives", "asynctools.queue.depth");

    public void Dispose()
    {
        _durations.Dispose();
        _waiters.Dispose();
        _depth.Dispose();
    }

    [Fact]
    public void Instruments_HaveTheContractsNamesUnitsAndKinds()
    {
        _durations.Instrument.Should().BeOfType<Histogram<double>>();
        _durations.Instrument!.Unit.Should().Be("s");
        _durations.Instrument.Meter.Name.Should().Be("AsyncPrimitives");
        _waiters.Instrument.Should().BeOfType<UpDownCounter<long>>();
        _depth.Instrument.Should().BeOfType<ObservableUpDownCounter<long>>();
    }

    [Fact]
    public async Task ContendedLock_RecordsOneAcquiredWait_AndCountsTheWaiterWhileItQueues()
    {
        var gate = new AsyncLock { Name = "cache-refresh" };
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        var around = Stopwatch.StartNew(); // starts before the wait and is read after it: the wait took no longer

        ValueTask<AsyncLock.Releaser> waiting = gate.AcquireAsync();
        Sum(_waiters, "AsyncLock", "cache-refresh").Should().Be(1);
        _durations.GetMeasurementSnapshot().Should().BeEmpty("the wait has not ended");

        held.Dispose();
        (await waiting.AsTask().WaitAsync(s_bound)).Dispose();

        CollectedMeasurement<double> wait = _durations.GetMeasurementSnapshot().Should().ContainSingle().Subject;
        wait.Value.Should().BeInRange(0, around.Elapsed.TotalSeconds, "the duration is in seconds, from queueing to the grant");
        wait.Tags.Should().BeEquivalentTo(new Dictionary<string, object?>
        {
            ["asynctools.kind"] = "AsyncLock",
            ["asynctools.name"] = "cache-refresh",
            ["asynctools.outcome"] = "acquired",
        });
        Sum(_waiters, "AsyncLock", "cache-refresh").Should().Be(0);
        _waiters.GetMeasurementSnapshot().Select(m => m.Value).Should().Equal(1, -1);
    }

    [Fact]
    public async Task WaitsServedAtOnce_RecordNothing()
    {
        var gate = new AsyncLock { Name = "free" };
        (await gate.AcquireAsync()).Dispose();
        var limit = new AsyncSemaphore(2) { Name = "free" };
        (await limit.AcquireAsync(TimeSpan.FromSeconds(1))).Dispose();
        var queue = new AsyncQueue<int>(maxSize: 1) { Name = "free" };
        await queue.PutAsync(1);
        (await queue.GetAsync()).Should().Be(1);
        queue.TryGet(out _).Should().BeFalse();
        var ev = new AsyncEvent(initialState: true) { Name = "free" };
        await ev.WaitAsync();

        _durations.GetMeasurementSnapshot().Should().BeEmpty();
        _waiters.GetMeasurementSnapshot().Should().BeEmpty();
    }

    [Fact]
    public async Task TimedOutWait_RecordsTimeout()
    {
        var time = new FakeTimeProvider();
        var limit = new AsyncSemaphore(0, timeProvider: time) { Name = "partner-api" };
        Task waiting = limit.AcquireAsync(TimeSpan.FromSeconds(5)).AsTask(); // queued and its timer armed by the call

        time.Advance(TimeSpan.FromSeconds(5));

        await waiting.Invoking(t => t.WaitAsync(s_bound)).Should().ThrowAsync<TimeoutException>();
        Outcomes("AsyncSemaphore").Should().Equal("timeout");
        Sum(_waiters, "AsyncSemaphore", "partner-api").Should().Be(0);
    }

    [Fact]
    public async Task CancelledWait_RecordsCanceled()
    {
        var ev = new AsyncEvent { Name = "warmed-up" };
        using var cts = new CancellationTokenSource();
        Task waiting = ev.WaitAsync(cts.Token).AsTask();

        cts.Cancel();

        await waiting.Invoking(t => t.WaitAsync(s_bound)).Should().ThrowAsync<OperationCanceledException>();
        Outcomes("AsyncEvent").Should().Equal("canceled");
        Sum(_waiters, "AsyncEvent", "warmed-up").Should().Be(0);
    }

    [Fact]
    public async Task QueueShutDown_RecordsShutdown_ForWaitingGettersAndPutters()
    {
        var empty = new AsyncQueue<int> { Name = "jobs" };
        Task getter = empty.GetAsync().AsTask();
        var full = new AsyncLifoQueue<int>(maxSize: 1) { Name = "jobs" };
        await full.PutAsync(1);
        Task putter = full.PutAsync(2).AsTask();

        empty.Shutdown();
        full.Shutdown();

        await getter.Invoking(t => t.WaitAsync(s_bound)).Should().ThrowAsync<QueueShutDownException>();
        await putter.Invoking(t => t.WaitAsync(s_bound)).Should().ThrowAsync<QueueShutDownException>();
        Outcomes("AsyncQueue").Should().Equal("shutdown");
        Outcomes("AsyncLifoQueue").Should().Equal("shutdown");
    }

    [Fact]
    public async Task Kind_IsTheTypeNameWithoutGenericArity_AndNameIsOmittedWhenNull()
    {
        var priority = new AsyncPriorityQueue<int>();
        Task<int> getter = priority.GetAsync().AsTask();
        var result = new AsyncResult<string>();
        Task<string> reader = result.GetAsync().AsTask();

        await priority.PutAsync(7);
        result.Set("ready");
        (await getter.WaitAsync(s_bound)).Should().Be(7);
        (await reader.WaitAsync(s_bound)).Should().Be("ready");

        IReadOnlyList<CollectedMeasurement<double>> waits = _durations.GetMeasurementSnapshot();
        waits.Select(m => m.Tags["asynctools.kind"]).Should().BeEquivalentTo(["AsyncPriorityQueue", "AsyncResult"]);
        waits.Should().OnlyContain(m => !m.Tags.ContainsKey("asynctools.name") && (string?)m.Tags["asynctools.outcome"] == "acquired");
    }

    [Fact]
    public async Task ResultSetWithAnException_CountsAsAcquired()
    {
        var result = new AsyncResult<int> { Name = "config" };
        Task<int> reader = result.GetAsync().AsTask();

        result.SetException(new TimeoutException("the result itself is this exception"));

        await reader.Invoking(t => t.WaitAsync(s_bound)).Should().ThrowAsync<TimeoutException>();
        Outcomes("AsyncResult").Should().Equal("acquired");
    }

    [Fact]
    public async Task ReaderWriterLock_WriterQueuedBehindAReader_RecordsItsWait()
    {
        var rw = new AsyncReaderWriterLock { Name = "routes" };
        AsyncReaderWriterLock.Releaser reader = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> writer = rw.AcquireWriteAsync().AsTask();
        Sum(_waiters, "AsyncReaderWriterLock", "routes").Should().Be(1);

        reader.Dispose();
        (await writer.WaitAsync(s_bound)).Dispose();

        Outcomes("AsyncReaderWriterLock").Should().Equal("acquired");
        Sum(_waiters, "AsyncReaderWriterLock", "routes").Should().Be(0);
    }

    [Fact]
    public async Task ConditionWait_IsOneWaitOfTheCondition_UntilItHoldsTheLockAgain()
    {
        var time = new FakeTimeProvider();
        var condition = new AsyncCondition(timeProvider: time) { Name = "orders-ready" };
        Task notified = WaitOnceAsync(condition, Timeout.InfiniteTimeSpan);
        Task timedOut = WaitOnceAsync(condition, TimeSpan.FromSeconds(1));
        Sum(_waiters, "AsyncCondition", "orders-ready").Should().Be(2, "both took the free lock and began waiting at the call");

        using (await condition.AcquireAsync())
        {
            condition.Notify();
            time.Advance(TimeSpan.FromSeconds(1));

            // Both left the condition's line and wait for this lock: still waiters of the condition, not yet measured.
            Sum(_waiters, "AsyncCondition", "orders-ready").Should().Be(2);
            Outcomes("AsyncCondition").Should().BeEmpty();
        }

        await notified.WaitAsync(s_bound);
        await timedOut.Invoking(t => t.WaitAsync(s_bound)).Should().ThrowAsync<TimeoutException>();
        Outcomes("AsyncCondition").Should().BeEquivalentTo(["acquired", "timeout"]);
        Outcomes("AsyncLock").Should().BeEmpty("re-acquiring the lock is part of the condition's wait");
        Sum(_waiters, "AsyncCondition", "orders-ready").Should().Be(0);
    }

    [Fact]
    public async Task WaitQueuedBeforeAnyoneListened_IsNeitherCountedDownNorMeasured()
    {
        _waiters.Dispose();
        _durations.Dispose();
        var gate = new AsyncLock { Name = "late" };
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> waiting = gate.AcquireAsync(); // queued while nobody listens

        using var waiters = new MetricCollector<long>(null, "AsyncPrimitives", "asynctools.waiters");
        using var durations = new MetricCollector<double>(null, "AsyncPrimitives", "asynctools.wait.duration");
        held.Dispose();
        (await waiting.AsTask().WaitAsync(s_bound)).Dispose();

        waiters.GetMeasurementSnapshot().Should().BeEmpty("a wait that was never counted up is never counted down");
        durations.GetMeasurementSnapshot().Should().BeEmpty();
    }

    [Fact]
    public async Task QueueDepth_ReportsEachNamedQueue_AddsUpQueuesOfOneName_AndSkipsUnnamedOnes()
    {
        string name = "depth-" + Guid.NewGuid().ToString("N");
        var jobs = new AsyncQueue<int> { Name = name };
        var moreJobs = new AsyncQueue<int> { Name = name };
        var priority = new AsyncPriorityQueue<int> { Name = name };
        var unnamed = new AsyncQueue<int>();
        for (int i = 0; i < 3; i++)
        {
            await jobs.PutAsync(i);
            await unnamed.PutAsync(i);
        }

        await moreJobs.PutAsync(1);
        await priority.PutAsync(1);

        _depth.RecordObservableInstruments();

        IReadOnlyList<CollectedMeasurement<long>> depths = _depth.GetMeasurementSnapshot()
            .Where(m => Equals(m.Tags.GetValueOrDefault("asynctools.name"), name)).ToList();
        depths.Should().HaveCount(2);
        depths.Single(m => Equals(m.Tags["asynctools.kind"], "AsyncQueue")).Value.Should().Be(4);
        depths.Single(m => Equals(m.Tags["asynctools.kind"], "AsyncPriorityQueue")).Value.Should().Be(1);
        _depth.GetMeasurementSnapshot().Should().OnlyContain(m => m.Tags.ContainsKey("asynctools.name"));

        // A later collection still sees the live queues, with their depth now.
        _depth.Clear();
        (await jobs.GetAsync()).Should().Be(0);
        _depth.RecordObservableInstruments();
        _depth.GetMeasurementSnapshot()
            .Where(m => Equals(m.Tags.GetValueOrDefault("asynctools.name"), name)).Select(m => m.Value).Should().BeEquivalentTo([3L, 1L]);
        GC.KeepAlive(unnamed);
        GC.KeepAlive(moreJobs);
        GC.KeepAlive(priority);
    }

    [Fact]
    public void QueueDepth_ForgetsCollectedQueues()
    {
        string name = "collected-" + Guid.NewGuid().ToString("N");
        WeakReference queue = CreateNamedQueue(name);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        queue.IsAlive.Should().BeFalse("the registry holds named queues weakly");

        // The collected queue's entry is still in the registry; nothing registers another meanwhile (this test collection
        // runs alone), so the count drops once the listener's collection has dropped that entry.
        int registered = WaitMetrics.RegisteredQueues;

        _depth.RecordObservableInstruments();

        _depth.GetMeasurementSnapshot().Should().NotContain(m => Equals(m.Tags.GetValueOrDefault("asynctools.name"), name));
        WaitMetrics.RegisteredQueues.Should().BeLessThan(registered, "a collection drops the entries of collected queues too");
    }

    [Fact]
    public async Task ManyContendedWaits_CountEveryWaiterDownAgain()
    {
        var limit = new AsyncSemaphore(2) { Name = "many" };
        Task[] workers = Enumerable.Range(0, 8).Select(i => Task.Run(async () =>
        {
            for (int n = 0; n < 200; n++)
            {
                try
                {
                    using (await limit.AcquireAsync(n % 7 == 0 ? TimeSpan.Zero : Timeout.InfiniteTimeSpan))
                    {
                        await Task.Yield();
                    }
                }
                catch (TimeoutException)
                {
                }
            }
        })).ToArray();

        await Task.WhenAll(workers).WaitAsync(s_bound * 3);

        Sum(_waiters, "AsyncSemaphore", "many").Should().Be(0);
        _durations.GetMeasurementSnapshot().Should().HaveCount(_waiters.GetMeasurementSnapshot().Count / 2);
        limit.CurrentCount.Should().Be(2);
    }

    [Fact]
    public async Task KeyedLock_MetersEachQueuedWaitOnce_WithTheLocksNameAndNoKey()
    {
        var time = new FakeTimeProvider();
        var locks = new AsyncKeyedLock<string>(timeProvider: time) { Name = "per-account" };
        (await locks.AcquireAsync("b")).Dispose(); // a key nobody holds: served at once, no wait
        _durations.GetMeasurementSnapshot().Should().BeEmpty();

        for (int round = 0; round < 2; round++)
        {
            // The key's line is created by its first waiter and reused by the next: each wait is metered once.
            locks.TryAcquire("a", out AsyncKeyedLock<string>.Releaser held).Should().BeTrue();
            ValueTask<AsyncKeyedLock<string>.Releaser> waiting = locks.AcquireAsync("a");
            Sum(_waiters, "AsyncKeyedLock", "per-account").Should().Be(1);

            held.Dispose();
            (await waiting.AsTask().WaitAsync(s_bound)).Dispose();
            Sum(_waiters, "AsyncKeyedLock", "per-account").Should().Be(0);
        }

        locks.TryAcquire("a", out AsyncKeyedLock<string>.Releaser holder).Should().BeTrue();
        Task timedOut = locks.AcquireAsync("a", TimeSpan.FromSeconds(1)).AsTask();
        using var cts = new CancellationTokenSource();
        Task cancelled = locks.AcquireAsync("a", cts.Token).AsTask();
        time.Advance(TimeSpan.FromSeconds(1));
        cts.Cancel();
        await timedOut.Invoking(t => t.WaitAsync(s_bound)).Should().ThrowAsync<TimeoutException>();
        await cancelled.Invoking(t => t.WaitAsync(s_bound)).Should().ThrowAsync<OperationCanceledException>();
        holder.Dispose();

        Outcomes("AsyncKeyedLock").Should().Equal("acquired", "acquired", "timeout", "canceled");
        _durations.GetMeasurementSnapshot().Should().OnlyContain(m =>
            m.Tags.Count == 3 && Equals(m.Tags["asynctools.name"], "per-account"), "kind, name and outcome: a key is never a tag");
        _waiters.GetMeasurementSnapshot().Select(m => m.Value).Should().Equal(1, -1, 1, -1, 1, 1, -1, -1);
        locks.KeyCount.Should().Be(0);
    }

    [Fact]
    public async Task AsyncThread_MetersEachCallsWaitForTheThread_UntilItStartsOrIsCancelled()
    {
        await using var thread = new AsyncThread("sqlite");
        using var release = new ManualResetEventSlim();
        Task blocker = await BlockAsync(thread, release);
        Outcomes("AsyncThread").Should().Equal(["acquired"], "the first call waited only until the thread took it");

        using var cts = new CancellationTokenSource();
        Task cancelled = thread.RunAsync(() => { }, cts.Token);
        Task<int> queued = thread.RunAsync(() => 42);
        Sum(_waiters, "AsyncThread", "sqlite").Should().Be(2, "both wait behind the running call");

        cts.Cancel();
        await cancelled.Invoking(t => t.WaitAsync(s_bound)).Should().ThrowAsync<OperationCanceledException>();
        Sum(_waiters, "AsyncThread", "sqlite").Should().Be(1);
        release.Set();
        (await queued.WaitAsync(s_bound)).Should().Be(42);
        await blocker.WaitAsync(s_bound);

        Outcomes("AsyncThread").Should().Equal("acquired", "canceled", "acquired");
        _durations.GetMeasurementSnapshot().Should().OnlyContain(m => Equals(m.Tags["asynctools.name"], "sqlite"));
        Sum(_waiters, "AsyncThread", "sqlite").Should().Be(0);
    }

    [Fact]
    public async Task AsyncThread_ATokenCancelledJustAsItsWorkStarts_DoesNotCancelTheCall()
    {
        await using var thread = new AsyncThread("cancelled-as-it-starts");
        using var release = new ManualResetEventSlim();
        Task blocker = await BlockAsync(thread, release);
        using var cts = new CancellationTokenSource();
        bool ran = false;
        Task<int> call = thread.RunAsync(() =>
        {
            ran = true;
            return 5;
        }, cts.Token);

        // The thread records the call's wait as it takes the call off the queue, just before running it: the token is
        // cancelled there, after the call left the queue and before it runs.
        using MeterListener listener = WaitMeasurementListener.Start("AsyncPrimitives", "cancelled-as-it-starts", (instrument, _, _) =>
        {
            if (instrument == "asynctools.wait.duration")
            {
                cts.Cancel();
            }
        });
        release.Set();
        await blocker.WaitAsync(s_bound);

        (await call.WaitAsync(s_bound)).Should().Be(5, "once taken off the queue, the work runs and its result is the call's");
        ran.Should().BeTrue();
        cts.IsCancellationRequested.Should().BeTrue();
        Outcomes("AsyncThread").Should().NotContain("canceled");
    }

    /// <summary>Runs work on <paramref name="thread"/> that blocks it until <paramref name="release"/> is set; returns
    /// that work's task once it has started.</summary>
    private static async Task<Task> BlockAsync(AsyncThread thread, ManualResetEventSlim release)
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task blocker = thread.RunAsync(() =>
        {
            started.SetResult();
            release.Wait(s_bound);
        });
        await started.Task.WaitAsync(s_bound);
        return blocker;
    }

    private static WeakReference CreateNamedQueue(string name)
    {
        var queue = new AsyncQueue<int> { Name = name };
        queue.TryPut(1).Should().BeTrue();
        return new WeakReference(queue);
    }

    private static async Task WaitOnceAsync(AsyncCondition condition, TimeSpan timeout)
    {
        using (await condition.AcquireAsync())
        {
            await condition.WaitAsync(timeout);
        }
    }

    private static long Sum(MetricCollector<long> collector, string kind, string name) =>
        collector.GetMeasurementSnapshot()
            .Where(m => Equals(m.Tags["asynctools.kind"], kind) && Equals(m.Tags.GetValueOrDefault("asynctools.name"), name))
            .Sum(m => m.Value);

    private long Waiters(string kind) =>
        _waiters.GetMeasurementSnapshot().Where(m => Equals(m.Tags["asynctools.kind"], kind)).Sum(m => m.Value);

    private List<string?> Outcomes(string kind) =>
        _durations.GetMeasurementSnapshot()
            .Where(m => Equals(m.Tags["asynctools.kind"], kind))
            .Select(m => (string?)m.Tags["asynctools.outcome"])
            .ToList();

    [Fact]
    public async Task AListenerThatThrows_SurfacesInTheCallThatRecords_AfterEveryWaiterHasItsOutcome()
    {
        var ready = new AsyncEvent { Name = "throwing-listener" };
        var gate = new AsyncLock { Name = "throwing-listener" };
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        Task<AsyncLock.Releaser> lockWaiter = gate.AcquireAsync().AsTask();
        Task[] eventWaiters = [ready.WaitAsync().AsTask(), ready.WaitAsync().AsTask()];
        using (ThrowingListener("throwing-listener", (instrument, _, _) => instrument == "asynctools.wait.duration"))
        {
            // The waits queued while the test's collectors listened, so they are metered.
            FluentActions.Invoking(held.Dispose).Should().Throw<InvalidOperationException>("nothing is swallowed");
            FluentActions.Invoking(ready.Set).Should().Throw<InvalidOperationException>();
        }

        (await lockWaiter.WaitAsync(s_bound)).Dispose(); // handed the lock despite the listener
        await Task.WhenAll(eventWaiters).WaitAsync(s_bound); // both served, though the first one's record threw
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task AListenerThatThrowsAsATimerEndsAWait_ThrowsOnTheTimersThread_AfterTheWaitTimedOut()
    {
        // observability.md: where no caller records (a timer that ends a timed wait), the exception is unhandled there,
        // and the wait it recorded has its outcome first. A fake clock fires timers inside Advance, so "there" is Advance.
        var clock = new FakeTimeProvider();
        var semaphore = new AsyncSemaphore(1, timeProvider: clock) { Name = "throwing-as-timed-out" };
        semaphore.TryAcquire().Should().BeTrue();
        ValueTask<AsyncSemaphore.Releaser> timed;
        using (ThrowingListener("throwing-as-timed-out", (instrument, _, outcome) => outcome == "timeout"))
        {
            timed = semaphore.AcquireAsync(TimeSpan.FromSeconds(1));
            FluentActions.Invoking(() => clock.Advance(TimeSpan.FromSeconds(1)))
                .Should().Throw<InvalidOperationException>("nothing is swallowed: the timer's callback throws it");
        }

        timed.IsCompleted.Should().BeTrue("the wait had its outcome before the listener was called");
        await FluentActions.Awaiting(async () => await timed).Should().ThrowAsync<TimeoutException>();
        semaphore.Release();
        semaphore.CurrentCount.Should().Be(1, "the timed-out wait was given nothing");
    }

    [Fact]
    public async Task AListenerThatThrowsAsAKeyedWaitQueues_FailsThatWait_WhichLeavesTheLineHoldingNothing()
    {
        var keyed = new AsyncKeyedLock<string> { Name = "throwing-as-queued-keyed" };
        keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser holder).Should().BeTrue();
        Task<AsyncKeyedLock<string>.Releaser> failed;
        using (ThrowingListener("throwing-as-queued-keyed", WaitMeasurementListener.IsQueueing))
        {
            failed = keyed.AcquireAsync("k", TimeSpan.FromSeconds(5)).AsTask();
        }

        await FluentActions.Awaiting(() => failed.WaitAsync(s_bound)).Should().ThrowAsync<InvalidOperationException>("nothing is swallowed");
        holder.Dispose();
        keyed.KeyCount.Should().Be(0, "the failed wait holds nothing and waits no more");
        keyed.TryAcquire("k", out AsyncKeyedLock<string>.Releaser again).Should().BeTrue("the key was not handed to a wait nobody sees");
        again.Dispose();
    }

    [Fact]
    public async Task AListenerThatThrowsAsAConditionWaitQueues_FailsThatWaitWithTheLockHeld_AndNotifyReachesTheNextWaiter()
    {
        var condition = new AsyncCondition { Name = "throwing-as-queued-condition" };
        using (await condition.AcquireAsync())
        {
            ValueTask failed;
            using (ThrowingListener("throwing-as-queued-condition", WaitMeasurementListener.IsQueueing))
            {
                failed = condition.WaitAsync();
            }

            await FluentActions.Awaiting(async () => await failed).Should().ThrowAsync<InvalidOperationException>();
            condition.IsLocked.Should().BeTrue("a failed wait holds the lock again");
        }

        var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task waiter = Task.Run(async () =>
        {
            using (await condition.AcquireAsync())
            {
                ValueTask wait = condition.WaitAsync();
                waiting.SetResult();
                await wait;
            }
        });
        await waiting.Task.WaitAsync(s_bound);
        using (await condition.AcquireAsync().AsTask().WaitAsync(s_bound))
        {
            condition.Notify(1);
        }

        await waiter.WaitAsync(s_bound); // woken: the notification did not go to the failed wait
        condition.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task AListenerThatThrowsAsAGetQueues_FailsThatGet_AndTheNextItemStaysInTheQueue()
    {
        var queue = new AsyncLifoQueue<int> { Name = "throwing-as-queued-get" };
        ValueTask<int> failed;
        using (ThrowingListener("throwing-as-queued-get", WaitMeasurementListener.IsQueueing))
        {
            failed = queue.GetAsync();
        }

        await FluentActions.Awaiting(async () => await failed).Should().ThrowAsync<InvalidOperationException>();
        await queue.PutAsync(42).AsTask().WaitAsync(s_bound);
        queue.TryGet(out int item).Should().BeTrue("the item was not handed to a get nobody sees");
        item.Should().Be(42);
        queue.TaskDone();
        await queue.JoinAsync().AsTask().WaitAsync(s_bound);
    }

    private static readonly AsyncLocal<int> s_ambient = new();

    [Fact]
    public async Task ACancelledWaitsRecord_RunsInTheCancellersExecutionContext_NotTheWaiters()
    {
        // The cancellation's bookkeeping (here a listener's callback as the wait is counted out) must not run with the
        // waiter's AsyncLocal values: a registration flows no ExecutionContext, on either library asset.
        var seen = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        using MeterListener listener = WaitMeasurementListener.Start("AsyncPrimitives", "record-context", (instrument, _, _) =>
        {
            if (instrument == "asynctools.wait.duration")
            {
                seen.TrySetResult(s_ambient.Value);
            }
        });
        var semaphore = new AsyncSemaphore(0) { Name = "record-context" };
        using var cts = new CancellationTokenSource();
        Task? waiting = null;
        await Task.Run(() =>
        {
            s_ambient.Value = 42; // the waiter's
            waiting = semaphore.AcquireAsync(cts.Token).AsTask(); // queued, and its cancellation registered, here
        });

        await Task.Run(() =>
        {
            s_ambient.Value = 7; // the canceller's
            cts.Cancel();
        });

        await FluentActions.Awaiting(() => waiting!.WaitAsync(s_bound)).Should().ThrowAsync<OperationCanceledException>();
        (await seen.Task.WaitAsync(s_bound)).Should().Be(7);
    }

    [Fact]
    public async Task AListenerThatThrowsAsAThreadCallQueues_FailsThatCall_WhichNeverRuns()
    {
        await using var thread = new AsyncThread("throwing-as-queued-thread");
        using var release = new ManualResetEventSlim();
        Task blocker = await BlockAsync(thread, release);
        int ran = 0;
        Task failed;
        using (ThrowingListener("throwing-as-queued-thread", WaitMeasurementListener.IsQueueing))
        {
            failed = thread.RunAsync(() => { Interlocked.Increment(ref ran); });
        }

        release.Set();
        await blocker.WaitAsync(s_bound);
        await FluentActions.Awaiting(() => failed.WaitAsync(s_bound)).Should().ThrowAsync<InvalidOperationException>("nothing is swallowed");
        await thread.RunAsync(() => { }).WaitAsync(s_bound); // everything queued before it has run
        Volatile.Read(ref ran).Should().Be(0, "the caller was told the call failed");
        Outcomes("AsyncThread").Should().Contain("error").And.NotContain("canceled", "no token was cancelled");
    }

    [Fact]
    public async Task AWaitFailedByItsTimeProvider_IsCountedOut_AndRecordedOnceAsAnError()
    {
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        var gate = new AsyncLock(time) { Name = "timer-fails" };
        var queue = new AsyncQueue<int>(timeProvider: time) { Name = "timer-fails" };
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();

        await FluentActions.Awaiting(async () => await gate.AcquireAsync(TimeSpan.FromSeconds(1))).Should().ThrowAsync<InvalidOperationException>();
        await FluentActions.Awaiting(async () => await queue.GetAsync(TimeSpan.FromSeconds(1))).Should().ThrowAsync<InvalidOperationException>();
        held.Dispose();

        Waiters("AsyncLock").Should().Be(0);
        Waiters("AsyncQueue").Should().Be(0);
        Outcomes("AsyncLock").Should().Equal("error");
        Outcomes("AsyncQueue").Should().Equal("error");
    }

    [Fact]
    public async Task AListenerThatThrowsAsAConditionWaitsReleaseServesTheLock_FailsThatWaitOnceItHoldsTheLockAgain()
    {
        var gate = new AsyncLock { Name = "throwing-as-condition-releases" };
        var condition = new AsyncCondition(gate);
        gate.TryAcquire(out _).Should().BeTrue();
        Task<AsyncLock.Releaser> other;
        ValueTask wait;
        using (ThrowingListener("throwing-as-condition-releases", (instrument, _, _) => instrument == "asynctools.wait.duration"))
        {
            other = gate.AcquireAsync().AsTask(); // waits for the lock; its wait is counted out as WaitAsync releases it
            wait = condition.WaitAsync();
        }

        (await other.WaitAsync(s_bound)).Dispose(); // the lock went to the other waiter, whose measurement threw
        wait.IsCompleted.Should().BeFalse("the condition's wait is in line, waiting for a notification");
        using (await gate.AcquireAsync().AsTask().WaitAsync(s_bound))
        {
            condition.Notify();
        }

        await FluentActions.Awaiting(async () => await wait.AsTask().WaitAsync(s_bound))
            .Should().ThrowAsync<InvalidOperationException>().WithMessage("a faulty exporter");
        gate.IsLocked.Should().BeTrue("a failed condition wait holds the lock again");
        gate.Release();
        condition.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AListenerThatThrowsForEveryMeasurement_FailsAConditionWaitThroughItsValueTask_WithTheLockHeld()
    {
        var condition = new AsyncCondition { Name = "throwing-always-condition" };
        using (await condition.AcquireAsync())
        {
            ValueTask failed = default;
            using (ThrowingListener("throwing-always-condition", (_, _, _) => true))
            {
                FluentActions.Invoking(() => failed = condition.WaitAsync())
                    .Should().NotThrow("the caller reads the wait's outcome from the wait");
            }

            failed.IsFaulted.Should().BeTrue();
            await FluentActions.Awaiting(async () => await failed).Should().ThrowAsync<InvalidOperationException>();
            condition.IsLocked.Should().BeTrue("a failed wait holds the lock again");
        }
    }

    [Fact]
    public async Task AListenerThatThrowsForEveryMeasurement_FailsAQueuedWaitThroughItsValueTask_WithTheFirstException()
    {
        var queue = new AsyncQueue<int> { Name = "throwing-always" };
        ValueTask<int> failed;
        using (ThrowingListener("throwing-always", (_, _, _) => true))
        {
            failed = queue.GetAsync(); // throws as it queues, and again as it is counted out
        }

        failed.IsFaulted.Should().BeTrue("the wait has its outcome at once, and the caller reads it from the wait");
        await FluentActions.Awaiting(async () => await failed).Should().ThrowAsync<InvalidOperationException>();
        queue.TryPut(1).Should().BeTrue();
        queue.TryGet(out int item).Should().BeTrue("the item was not handed to the failed get");
        item.Should().Be(1);
    }

    [Fact]
    public async Task AListenerThatThrowsOnACancelledThreadCallsRecord_StillCancelsThatCall()
    {
        await using var thread = new AsyncThread("throwing-on-cancel");
        using var release = new ManualResetEventSlim();
        Task blocker = await BlockAsync(thread, release);
        using var cts = new CancellationTokenSource();
        Task cancelled = thread.RunAsync(() => { }, cts.Token);
        using (ThrowingListener("throwing-on-cancel", (instrument, _, outcome) => instrument == "asynctools.wait.duration" && outcome == "canceled"))
        {
            FluentActions.Invoking(cts.Cancel).Should().Throw<AggregateException>("nothing is swallowed");
        }

        release.Set();
        await blocker.WaitAsync(s_bound);
        await FluentActions.Awaiting(() => cancelled.WaitAsync(s_bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    private static MeterListener ThrowingListener(string name, Func<string, double, string?, bool> throwsFor) =>
        WaitMeasurementListener.Throwing("AsyncPrimitives", name, throwsFor);
}
