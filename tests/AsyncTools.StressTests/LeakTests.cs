using System.Runtime.CompilerServices;
using AsyncPrimitives;
using AsyncPrimitives.Internal;
using AsyncPrimitives.Tests;
using Xunit.Abstractions;

namespace AsyncTools.StressTests;

/// <summary>
/// After 1,000,000 waits that time out or are cancelled on a primitive, nothing is left behind: no linked waiter, at
/// most 32 pooled nodes, no timer, no CancellationToken registration (a registration would keep its node reachable
/// from the long-lived token source), and the per-batch token sources and the waiter nodes are collectable.
/// </summary>
/// <remarks>
/// Most of the million take the paths that never enqueue (a pre-cancelled token, <see cref="TimeSpan.Zero"/>); the
/// rest are real waits that join the line and leave it: cancelled by <see cref="CancellationTokenSource.Cancel()"/>
/// in batches, and timed out by <see cref="FakeTimeProvider.Advance"/> in batches while carrying a token of a source
/// that stays alive for the whole test.
/// </remarks>
public sealed class LeakTests(ITestOutputHelper output)
{
    private const int TotalWaits = 1_000_000;
    private const int CancelledWaits = 60_000;
    private const int TimedOutWaits = 30_000;
    private const int CancelBatch = 1_000;
    private const int TimeoutBatch = 500;

    /// <summary>One kind of wait on one primitive: <c>Wait(timeout, token)</c> must wait (the primitive is kept blocked);
    /// <c>CancelOneObservedWait</c> runs that same wait, untimed, through <see cref="CancelledWaitProbe"/>.</summary>
    internal sealed record Target(
        string Name, object Primitive, WaitLines Lines, CountingTimeProvider Time,
        Func<TimeSpan, CancellationToken, Task> Wait, Func<WeakReference> CancelOneObservedWait)
    {
        public override string ToString() => Name;

        /// <summary>Weak references to every node waiting in the primitive's lines right now.</summary>
        [MethodImpl(MethodImplOptions.NoInlining)]
        public List<WeakReference> LinkedNodes() => Lines.LinkedNodes().Select(node => new WeakReference(node)).ToList();
    }

    public static TheoryData<string> Targets => new()
    {
        "lock", "semaphore", "rwlock-read", "rwlock-write", "event", "result", "queue-get", "lifo-put", "priority-join",
    };

    [Theory]
    [MemberData(nameof(Targets))]
    public async Task AMillionTimedOutOrCancelledWaits_LeaveNoWaiterTimerRegistrationOrNodeBehind(string name)
    {
        Target target = Create(name);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var longLived = new CancellationTokenSource(); // never cancelled: its registrations must all be removed

        int fast = FastFailures(target, TotalWaits - CancelledWaits - TimedOutWaits);

        var sourceRefs = new List<WeakReference>();
        List<WeakReference> cancelledNodes = [];
        for (int done = 0; done < CancelledWaits; done += CancelBatch)
        {
            (WeakReference source, List<WeakReference> nodes) = await CancelledBatchAsync(target, CancelBatch);
            sourceRefs.Add(source);
            cancelledNodes = nodes;
        }

        // The timed-out waits below rent every pooled node again and overwrite what it kept, so what a recycled
        // cancelled node still holds is checked here, while the pool is full of them: one more wait cancelled on this
        // thread and observed (it rents a pooled node and returns it), and only what that node kept can hold its source.
        target.Lines.MaxPooled.Should().BeLessThanOrEqualTo(WaitLines.PoolCapacity, "{0}: the node pool is bounded", name);
        WeakReference probeSource = target.CancelOneObservedWait();
        CancelledWaitProbe.Collect();
        probeSource.IsAlive.Should().BeFalse(
            "{0}: a recycled node keeps neither the exception, the token nor the registration of its cancelled wait", name);

        List<WeakReference> timedOutNodes = [];
        for (int done = 0; done < TimedOutWaits; done += TimeoutBatch)
        {
            List<WeakReference> nodes = await TimedOutBatchAsync(target, TimeoutBatch, longLived.Token);
            if (done == 0)
            {
                timedOutNodes = nodes;
            }
        }

        output.WriteLine($"{name}: {fast + CancelledWaits + TimedOutWaits:N0} waits in {sw.ElapsedMilliseconds} ms " +
            $"({fast:N0} fast, {CancelledWaits:N0} cancelled, {TimedOutWaits:N0} timed out); timers created {target.Time.TimerCreations:N0}");
        (fast + CancelledWaits + TimedOutWaits).Should().Be(TotalWaits);

        target.Lines.Waiting.Should().Be(0, "every waiter left the line");
        target.Time.ActiveTimers.Should().Be(0, "every timeout timer was disposed");
        target.Time.TimerCreations.Should().Be(TimedOutWaits + (CancelledWaits / 2), "only waits with a finite timeout that enqueued create a timer");

        FullCollect();
        sourceRefs.Count(r => r.IsAlive).Should().Be(0, "nothing keeps a cancelled wait's CancellationTokenSource reachable");
        timedOutNodes.Should().HaveCount(TimeoutBatch);
        timedOutNodes.Count(r => r.IsAlive).Should().Be(0,
            "a timed-out node is never pooled, and neither its timer nor its registration on the live token keeps it");
        cancelledNodes.Should().HaveCount(CancelBatch);
        cancelledNodes.Count(r => r.IsAlive).Should().BeLessThanOrEqualTo(WaitLines.PoolCapacity, "only pooled nodes survive");
        GC.KeepAlive(longLived);

        // Still usable afterwards.
        await UsableAsync(target);
    }

    [Fact]
    public async Task AsyncCondition_ManyTimedOutOrCancelledWaits_LeaveNoWaiterTimerOrNodeBehind()
    {
        // A condition wait re-acquires the lock before it returns, so each waiter is a small task; fewer of them.
        var time = new CountingTimeProvider();
        var condition = new AsyncCondition(timeProvider: time);
        using var longLived = new CancellationTokenSource();
        int fast = 0;
        using (await condition.AcquireAsync())
        {
            using var cancelled = new CancellationTokenSource();
            cancelled.Cancel();
            for (int i = 0; i < 200_000; i++)
            {
                Task wait = (i % 2 == 0 ? condition.WaitAsync(cancelled.Token) : condition.WaitAsync(TimeSpan.Zero)).AsTask();
                wait.IsCompleted.Should().BeTrue();
                wait.IsFaulted.Should().Be(i % 2 == 1);
                fast++;
            }
        }

        var sourceRefs = new List<WeakReference>();
        for (int batch = 0; batch < 20; batch++)
        {
            // The last batch is a cancelled one: a timed batch after it would overwrite what its pooled nodes kept.
            sourceRefs.Add(ConditionBatch(condition, time, 500, timed: batch % 2 == 0, longLived.Token));
        }

        output.WriteLine($"condition: {fast + 10_000:N0} waits");
        condition.Lines.Waiting.Should().Be(0);
        condition.IsLocked.Should().BeFalse();
        condition.Lines.MaxPooled.Should().BeLessThanOrEqualTo(WaitLines.PoolCapacity);
        time.ActiveTimers.Should().Be(0);

        // Each batch ran to its end on this thread, its frames gone: a source still alive is one the condition kept (the
        // probe's collection first replaces the last OperationCanceledException this thread threw, which holds a token).
        CancelledWaitProbe.Collect();
        sourceRefs.Select((r, i) => r.IsAlive ? i : -1).Where(i => i >= 0).Should().BeEmpty();
        GC.KeepAlive(longLived);
    }

    private static Target Create(string name)
    {
        var time = new CountingTimeProvider();
        switch (name)
        {
            case "lock":
            {
                var gate = new AsyncLock(time);
                gate.TryAcquire(out _).Should().BeTrue();
                return new(name, gate, gate.Lines, time, (t, ct) => gate.AcquireAsync(t, ct).AsTask(), Probe(gate.AcquireAsync));
            }

            case "semaphore":
            {
                var semaphore = new AsyncSemaphore(0, 4, time);
                return new(name, semaphore, semaphore.Lines, time, (t, ct) => semaphore.AcquireAsync(t, ct).AsTask(), Probe(semaphore.AcquireAsync));
            }

            case "rwlock-read":
            case "rwlock-write":
            {
                var rw = new AsyncReaderWriterLock(timeProvider: time);
                rw.TryAcquireWrite(out _).Should().BeTrue();
                return name == "rwlock-read"
                    ? new(name, rw, rw.Lines, time, (t, ct) => rw.AcquireReadAsync(t, ct).AsTask(), Probe(rw.AcquireReadAsync))
                    : new(name, rw, rw.Lines, time, (t, ct) => rw.AcquireWriteAsync(t, ct).AsTask(), Probe(rw.AcquireWriteAsync));
            }

            case "event":
            {
                var ev = new AsyncEvent(timeProvider: time);
                return new(name, ev, ev.Lines, time, (t, ct) => ev.WaitAsync(t, ct).AsTask(), Probe(ev.WaitAsync));
            }

            case "result":
            {
                var result = new AsyncResult<int>(time);
                return new(name, result, result.Lines, time, (t, ct) => result.GetAsync(t, ct).AsTask(), Probe(result.GetAsync));
            }

            case "queue-get":
            {
                var queue = new AsyncQueue<int>(timeProvider: time);
                return new(name, queue, queue.Lines, time, (t, ct) => queue.GetAsync(t, ct).AsTask(), Probe(queue.GetAsync));
            }

            case "lifo-put":
            {
                var queue = new AsyncLifoQueue<int>(1, time);
                queue.TryPut(0).Should().BeTrue();
                return new(name, queue, queue.Lines, time, (t, ct) => queue.PutAsync(1, t, ct).AsTask(), Probe(ct => queue.PutAsync(1, ct)));
            }

            default:
            {
                var queue = new AsyncPriorityQueue<int>(timeProvider: time);
                queue.TryPut(0).Should().BeTrue(); // one unfinished task: JoinAsync waits
                return new(name, queue, queue.Lines, time, (t, ct) => queue.JoinAsync(t, ct).AsTask(), Probe(queue.JoinAsync));
            }
        }
    }

    /// <summary>A <see cref="Target"/>'s <c>CancelOneObservedWait</c>: <see cref="CancelledWaitProbe"/> on <paramref name="wait"/>.</summary>
    private static Func<WeakReference> Probe<T>(Func<CancellationToken, ValueTask<T>> wait) => () => CancelledWaitProbe.CancelOneObservedWait(wait);

    /// <summary>The same, for a wait with no result.</summary>
    private static Func<WeakReference> Probe(Func<CancellationToken, ValueTask> wait) => () => CancelledWaitProbe.CancelOneObservedWait(wait);

    /// <summary>Waits that fail without joining the line: half with a pre-cancelled token, half with TimeSpan.Zero.</summary>
    private static int FastFailures(Target target, int count)
    {
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        for (int i = 0; i < count; i++)
        {
            Task wait = i % 2 == 0 ? target.Wait(Timeout.InfiniteTimeSpan, cancelled.Token) : target.Wait(TimeSpan.Zero, CancellationToken.None);
            if (!(i % 2 == 0 ? wait.IsCanceled : wait.IsFaulted && wait.Exception!.InnerException is TimeoutException))
            {
                throw new Xunit.Sdk.XunitException($"{target.Name}: fast wait {i} ended {wait.Status}");
            }
        }

        return count;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<(WeakReference Source, List<WeakReference> Nodes)> CancelledBatchAsync(Target target, int count)
    {
        var cts = new CancellationTokenSource();
        var waits = new Task[count];
        for (int i = 0; i < count; i++)
        {
            waits[i] = target.Wait(i % 2 == 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromDays(1), cts.Token);
        }

        List<WeakReference> nodes = target.LinkedNodes();
        nodes.Should().HaveCount(count, "{0}: every wait joined the line", target.Name);
        cts.Cancel();
        await SettledAsync(waits).Bounded();
        waits.Should().OnlyContain(w => w.IsCanceled, "{0}: a cancelled wait throws OperationCanceledException", target.Name);

        // The timers of the waits with a (long) timeout are disposed when their nodes are recycled.
        target.Time.ArmedTimers.Should().Be(0, "{0}: a cancelled wait disposes its timer", target.Name);
        cts.Dispose();
        return (new WeakReference(cts), nodes);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<List<WeakReference>> TimedOutBatchAsync(Target target, int count, CancellationToken liveToken)
    {
        var waits = new Task[count];
        for (int i = 0; i < count; i++)
        {
            waits[i] = target.Wait(TimeSpan.FromSeconds(1), liveToken);
        }

        List<WeakReference> nodes = target.LinkedNodes();
        target.Time.Advance(TimeSpan.FromSeconds(1));
        await SettledAsync(waits).Bounded();
        if (!waits.All(w => w.IsFaulted && w.Exception!.InnerException is TimeoutException))
        {
            throw new Xunit.Sdk.XunitException($"{target.Name}: every timed-out wait throws TimeoutException");
        }

        return nodes;
    }

    /// <summary>
    /// <paramref name="count"/> waiters take the condition's lock and wait on it, then all time out or are cancelled
    /// and take the lock back in turn. Runs to the end on the calling thread: every continuation of the waiters is
    /// posted to a <see cref="PumpContext"/> that this method runs dry, so once it returns no frame of the batch is on
    /// any stack, and whatever still holds the batch's token source is on the heap. Returns a weak reference to it.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference ConditionBatch(AsyncCondition condition, CountingTimeProvider time, int count, bool timed, CancellationToken liveToken)
    {
        var cts = new CancellationTokenSource();
        var pump = new PumpContext();
        Task[] waiters = pump.Run(() => Enumerable.Range(0, count).Select(async _ =>
        {
            await condition.AcquireAsync();
            try
            {
                await (timed ? condition.WaitAsync(TimeSpan.FromSeconds(1), liveToken) : condition.WaitAsync(cts.Token));
            }
            catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
            {
                condition.IsLocked.Should().BeTrue();
            }
            finally
            {
                condition.Release();
            }
        }).ToArray());

        condition.Lines.Waiting.Should().Be(count);
        pump.Run(() =>
        {
            if (timed)
            {
                time.Advance(TimeSpan.FromSeconds(1));
            }
            else
            {
                cts.Cancel();
            }
        });

        foreach (Task waiter in waiters)
        {
            waiter.IsCompleted.Should().BeTrue("every waiter timed out or was cancelled and got the lock back");
            waiter.GetAwaiter().GetResult(); // its own failure, if it failed
        }

        cts.Dispose();
        return new WeakReference(cts);
    }

    private static async Task UsableAsync(Target target)
    {
        Task wait = target.Wait(Timeout.InfiniteTimeSpan, CancellationToken.None);
        target.Lines.Waiting.Should().Be(1);
        switch (target.Primitive)
        {
            case AsyncLock gate:
                gate.Release();
                break;
            case AsyncSemaphore semaphore:
                semaphore.Release();
                break;
            case AsyncReaderWriterLock rw:
                rw.ReleaseWrite();
                break;
            case AsyncEvent ev:
                ev.Set();
                break;
            case AsyncResult<int> result:
                result.Set(1);
                break;
            case AsyncQueue<int> queue:
                queue.TryPut(1).Should().BeTrue();
                break;
            case AsyncLifoQueue<int> queue:
                queue.TryGet(out _).Should().BeTrue();
                break;
            case AsyncPriorityQueue<int> queue:
                queue.TryGet(out _).Should().BeTrue();
                queue.TaskDone();
                break;
        }

        await wait.Bounded();
        target.Lines.Waiting.Should().Be(0);
    }

    /// <summary>Completes when every task has completed, in whatever way.</summary>
    private static async Task SettledAsync(Task[] tasks) =>
        await Task.WhenAll(tasks).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);

    private static void FullCollect()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }
}
