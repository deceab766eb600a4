using System.Runtime.CompilerServices;
using AsyncPrimitives;
using AsyncPrimitives.Tests;
using Xunit.Abstractions;

namespace AsyncTools.StressTests;

/// <summary>
/// A recycled waiter node keeps nothing of the wait it served: not the awaiter's continuation (its async state machine
/// and everything that references), not the exception (an OperationCanceledException holds its token, and so its
/// CancellationTokenSource). A ValueTask awaited twice is caught, instead of returning its node to the pool twice. And a
/// node that waited with a system timer is reused only once that timer can no longer call back.
/// </summary>
public sealed class WaitNodeRecyclingTests(ITestOutputHelper output)
{
    /// <summary>Where the ExecutionContext test puts its payload: part of the ExecutionContext a continuation flows.</summary>
    private static readonly AsyncLocal<object?> s_flowed = new();

    /// <summary>
    /// Timed waits whose 1 ms system timer fires at about the moment the lock is handed over, each round's untimed wait
    /// renting the node of the previous round's timed one. A late timer callback that reached a reused node would fail
    /// that untimed wait with a TimeoutException. (The window for such a callback is narrow, between the timer deciding
    /// to fire and the callback taking the lock, so this is a smoke test; the guarantee itself is that a system timer's
    /// DisposeAsync completes synchronously only when no callback is queued or running.)
    /// </summary>
    [Fact]
    public Task RecycledTimedNode_NeverTimesOutALaterWaitThatHasNoTimeout() =>
        Stress.RoundsAsync(output, "timed-node-reuse", rounds: 3, async (rng, because) =>
        {
            var gate = new AsyncLock();
            int timedOut = 0;
            for (int i = 0; i < 1500; i++)
            {
                // The untimed wait rents the most recently recycled node: the previous round's timed one.
                gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue(because);
                ValueTask<AsyncLock.Releaser> untimed = gate.AcquireAsync();
                ValueTask<AsyncLock.Releaser> timed = gate.AcquireAsync(TimeSpan.FromMilliseconds(1));
                Thread.SpinWait(rng.Next(20_000)); // about the timer's resolution
                held.Dispose();
                (await untimed.AsTask().Bounded()).Dispose(); // a TimeoutException here is a stale callback on a reused node
                try
                {
                    (await timed.AsTask().Bounded()).Dispose();
                }
                catch (TimeoutException)
                {
                    timedOut++;
                }

                gate.IsLocked.Should().BeFalse(because);
            }

            gate.Lines.Waiting.Should().Be(0, because);
            output.WriteLine($"{because}: {timedOut} of 1500 timed waits timed out");
        });

    [Fact]
    public void CancelledWait_OnceObserved_DoesNotKeepItsTokenSourceReachableFromThePool()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        WeakReference source = CancelledWaitProbe.CancelOneObservedWait(gate.AcquireAsync);
        gate.Lines.MaxPooled.Should().Be(1, "the node went back to the pool");

        CancelledWaitProbe.Collect();
        source.IsAlive.Should().BeFalse("a pooled node must not keep the last wait's exception, token or continuation");
        held.Dispose();
    }

    [Fact]
    public async Task GrantedWait_OnceObserved_DoesNotKeepTheAwaitersStateReachableFromThePool()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        WeakReference payload = await AwaitGrantAsync(gate, held);
        gate.Lines.MaxPooled.Should().Be(1);

        // This continuation may have run inside the helpers' completing state machines, on the thread that resumed the
        // waiter: after Task.Yield it can run on another thread while that one is still leaving those frames, whose
        // locals a Debug build reports until then. So collect on a fresh stack until that thread has left them (a few
        // tries at most); a pooled node that kept the state machine would keep the payload through every try.
        int tries = 0;
        do
        {
            await Task.Yield();
            CancelledWaitProbe.Collect();
        }
        while (payload.IsAlive && ++tries < 5);

        payload.IsAlive.Should().BeFalse("a pooled node must not keep the awaiting method's state machine");
    }

    /// <summary>
    /// The test above awaits on no SynchronizationContext of its own, so the node never records one that could outlive
    /// it. Here the waiter awaits under a <see cref="PumpContext"/>: the node records it to post the continuation there,
    /// and once the waiter has observed the grant, the pooled node must have let go of it.
    /// </summary>
    [Fact]
    public void GrantedWait_AwaitedUnderASynchronizationContext_DoesNotKeepThatContextReachableFromThePool()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        WeakReference context = AwaitGrantUnderContext(gate, held);
        gate.Lines.MaxPooled.Should().Be(1, "the node went back to the pool");
        gate.IsLocked.Should().BeFalse();

        // Everything ran on this thread and every frame of it is gone: only the pooled node could still hold the context.
        CancelledWaitProbe.Collect();
        context.IsAlive.Should().BeFalse("a pooled node must not keep the SynchronizationContext its last awaiter resumed on");
    }

    /// <summary>
    /// A continuation given by <c>GetAwaiter().OnCompleted</c> (unlike an await's, which flows it by other means) asks
    /// the node to capture the ExecutionContext and run the continuation in it; a payload held in an AsyncLocal is part
    /// of that context. Once the waiter has observed the grant, the pooled node must have let go of it.
    /// </summary>
    [Fact]
    public void GrantedWait_WhoseContinuationFlowsTheExecutionContext_DoesNotKeepThatContextReachableFromThePool()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser held).Should().BeTrue();
        WeakReference payload = AwaitGrantFlowingPayload(gate, held);
        gate.Lines.MaxPooled.Should().Be(1, "the node went back to the pool");
        gate.IsLocked.Should().BeFalse();
        s_flowed.Value.Should().BeNull("the test put its payload in this thread's ExecutionContext only for the call that captured it");

        CancelledWaitProbe.Collect();
        payload.IsAlive.Should().BeFalse("a pooled node must not keep the ExecutionContext its last continuation ran in");
    }

    [Fact]
    public async Task ValueTask_ResultRequestedTwice_ThrowsAndDoesNotCorruptThePool()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> wait = gate.AcquireAsync();
        gate.Release();
        (await wait.AsTask().Bounded()).Should().NotBe(default(AsyncLock.Releaser));
        gate.Lines.MaxPooled.Should().Be(1);

        // Misuse: the result of the same ValueTask again. The node must not go back to the pool a second time.
        ValueTaskAwaiter<AsyncLock.Releaser> awaiter = wait.GetAwaiter();
        FluentActions.Invoking(() => awaiter.GetResult()).Should().Throw<InvalidOperationException>();
        gate.Lines.MaxPooled.Should().Be(1, "the pool holds each node once");

        // Two waiters must get two distinct nodes, and both must be served.
        Task<AsyncLock.Releaser> first = gate.AcquireAsync().AsTask();
        Task<AsyncLock.Releaser> second = gate.AcquireAsync().AsTask();
        gate.Lines.Waiting.Should().Be(2);
        gate.Release();
        (await first.Bounded()).Dispose();
        (await second.Bounded()).Dispose();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task PendingValueTask_ConsumedASecondTime_IsRejected_AndTheFirstConsumerStillGetsTheLock()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();
        ValueTask<AsyncLock.Releaser> wait = gate.AcquireAsync();
        Task<AsyncLock.Releaser> first = wait.AsTask();

        // Misuse: a second consumer of the pending wait. Rejected, and without touching the first consumer's state.
        FluentActions.Invoking(() => { _ = wait.AsTask(); }).Should().Throw<InvalidOperationException>();

        gate.Release();
        (await first.Bounded()).Dispose();
        gate.IsLocked.Should().BeFalse("the lock went to the first consumer and came back: it was not lost");
    }

    /// <summary>Awaits the lock in a method started under a new <see cref="PumpContext"/>, grants it (which posts the
    /// method's continuation to the context), and runs the context until the method has taken the lock, released it and
    /// completed. Returns a weak reference to the context.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference AwaitGrantUnderContext(AsyncLock gate, AsyncLock.Releaser held)
    {
        var context = new PumpContext();
        Task waiter = context.Run(async () =>
        {
            using (await gate.AcquireAsync())
            {
            }
        });
        waiter.IsCompleted.Should().BeFalse("the lock is held: the waiter parked");
        held.Dispose();
        waiter.IsCompleted.Should().BeFalse("the grant posted the waiter's continuation to its context, which has not run it yet");
        context.Run(() => { });
        waiter.IsCompletedSuccessfully.Should().BeTrue("the context ran the continuation: the waiter observed the grant");
        return new WeakReference(context);
    }

    /// <summary>Waits for the lock with a continuation given to <c>OnCompleted</c> while <see cref="s_flowed"/> holds a
    /// new payload (so the node captures an ExecutionContext that holds it), grants the lock, runs the continuation and
    /// observes the grant. Returns a weak reference to the payload. (The continuation goes to a <see cref="PumpContext"/>,
    /// so that it runs on this thread, before this method returns; no closure captures the payload.)</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference AwaitGrantFlowingPayload(AsyncLock gate, AsyncLock.Releaser held)
    {
        var payload = new byte[1024];
        var context = new PumpContext();
        ValueTaskAwaiter<AsyncLock.Releaser> awaiter = gate.AcquireAsync().GetAwaiter();
        bool flowed = false;
        s_flowed.Value = payload;
        try
        {
            context.Run(() => awaiter.OnCompleted(() => flowed = s_flowed.Value is byte[]));
        }
        finally
        {
            s_flowed.Value = null;
        }

        held.Dispose();
        context.Run(() => { });
        flowed.Should().BeTrue("the continuation ran in the ExecutionContext captured with it");
        awaiter.GetResult().Dispose();
        return new WeakReference(payload);
    }

    /// <summary>Starts a method that waits for the lock (its node parks the method's continuation), grants it, and
    /// returns once that method, with the lock released, is suspended on a task nothing will complete: from then on only
    /// that task, which nothing references, and a node that kept the continuation could reach its state machine and the
    /// payload it holds. (A method that ran to completion would prove nothing: the runtime clears a finished state
    /// machine.)</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<WeakReference> AwaitGrantAsync(AsyncLock gate, AsyncLock.Releaser held)
    {
        var payload = new byte[1024];
        var released = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = HoldAcrossWaitAsync(gate, payload, released);
        held.Dispose();
        await released.Task.Bounded();
        return new WeakReference(payload);

        static async Task HoldAcrossWaitAsync(AsyncLock gate, byte[] payload, TaskCompletionSource released)
        {
            using (await gate.AcquireAsync())
            {
            }

            released.SetResult();
            await new TaskCompletionSource().Task;
            GC.KeepAlive(payload); // the state machine holds payload across both awaits
        }
    }
}
