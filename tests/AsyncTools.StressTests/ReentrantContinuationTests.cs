using AsyncPrimitives;

namespace AsyncTools.StressTests;

/// <summary>
/// No deadlock from synchronous continuations: a waiter's continuation that calls straight back into the same
/// primitive (Release inside the continuation of an acquire, Put inside a get's continuation...) completes, both when
/// the continuation is a synchronous ContinueWith and when it runs on a SynchronizationContext whose Post runs inline
/// (so it executes on the releasing thread, inside the primitive's completion of the waiter).
/// </summary>
public sealed class ReentrantContinuationTests
{
    private const int Chain = 100;

    [Fact]
    public async Task AsyncLock_ReleaseInsideTheAcquireContinuation_ChainsThroughEveryWaiter()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();
        Task[] chain = Enumerable.Range(0, Chain)
            .Select(_ => gate.AcquireAsync().AsTask().ContinueWith(_ => gate.Release(), TaskContinuationOptions.ExecuteSynchronously))
            .ToArray();
        gate.Release();
        await Task.WhenAll(chain).Bounded();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task AsyncLock_ReleaseOnAnInlineSynchronizationContext_ChainsThroughEveryWaiter()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();
        Task[] chain = InlineContext.Run(() => Enumerable.Range(0, Chain).Select(async _ =>
        {
            using (await gate.AcquireAsync())
            {
            }
        }).ToArray());
        gate.Release();
        await Task.WhenAll(chain).Bounded();
        gate.IsLocked.Should().BeFalse();
        gate.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AsyncSemaphore_ReleaseInsideTheAcquireContinuation_ChainsThroughEveryWaiter()
    {
        var semaphore = new AsyncSemaphore(0, 2);
        Task[] chain = InlineContext.Run(() => Enumerable.Range(0, Chain).Select(async _ =>
        {
            using (await semaphore.AcquireAsync())
            {
            }
        }).ToArray());
        semaphore.Release(2);
        await Task.WhenAll(chain).Bounded();
        semaphore.CurrentCount.Should().Be(2);
    }

    [Fact]
    public async Task AsyncReaderWriterLock_ReleaseInsideTheAcquireContinuation_ChainsThroughEveryWaiter()
    {
        var rw = new AsyncReaderWriterLock();
        rw.TryAcquireWrite(out _).Should().BeTrue();
        Task[] chain = InlineContext.Run(() => Enumerable.Range(0, Chain).Select(async i =>
        {
            using (await (i % 3 == 0 ? rw.AcquireWriteAsync() : rw.AcquireReadAsync()))
            {
            }
        }).ToArray());
        rw.ReleaseWrite();
        await Task.WhenAll(chain).Bounded();
        rw.CurrentReaderCount.Should().Be(0);
        rw.IsWriteLockHeld.Should().BeFalse();
    }

    [Fact]
    public async Task AsyncQueue_PutInsideTheGetContinuation_ChainsThroughEveryGetter()
    {
        var queue = new AsyncQueue<int>(maxSize: 1);
        var got = new List<int>();
        Task[] getters = InlineContext.Run(() => Enumerable.Range(0, Chain).Select(async _ =>
        {
            int item = await queue.GetAsync();
            got.Add(item);
            await queue.PutAsync(item + 1); // straight back into the queue, from inside the get's completion
        }).ToArray());
        await queue.PutAsync(0);
        await Task.WhenAll(getters).Bounded();
        got.Should().Equal(Enumerable.Range(0, Chain));
        queue.TryGet(out int last).Should().BeTrue();
        last.Should().Be(Chain);
    }

    [Fact]
    public async Task AsyncQueue_GetInsideThePutContinuation_ChainsThroughEveryPutter()
    {
        var queue = new AsyncQueue<int>(maxSize: 1);
        queue.TryPut(-1).Should().BeTrue();
        Task[] putters = InlineContext.Run(() => Enumerable.Range(0, Chain).Select(async i =>
        {
            await queue.PutAsync(i);
            queue.TryGet(out _).Should().BeTrue(); // frees room for the next waiting putter, re-entering the queue
        }).ToArray());
        queue.TryGet(out int first).Should().BeTrue();
        first.Should().Be(-1);
        await Task.WhenAll(putters).Bounded();
        queue.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AsyncEvent_SetAndClearInsideTheWaitContinuation_CompleteEveryWaiter()
    {
        var ev = new AsyncEvent();
        int woken = 0;
        Task[] waiters = InlineContext.Run(() => Enumerable.Range(0, Chain).Select(async _ =>
        {
            await ev.WaitAsync();
            Interlocked.Increment(ref woken);
            ev.Clear();
            ev.Set();
        }).ToArray());
        ev.Set();
        await Task.WhenAll(waiters).Bounded();
        woken.Should().Be(Chain);
    }

    [Fact]
    public async Task AsyncCondition_NotifyInsideTheWaitContinuation_WakesEveryWaiter()
    {
        var condition = new AsyncCondition();
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int waiting = 0;
        Task[] waiters = InlineContext.Run(() => Enumerable.Range(0, 50).Select(async _ =>
        {
            await condition.AcquireAsync();
            try
            {
                ValueTask wait = condition.WaitAsync();
                if (Interlocked.Increment(ref waiting) == 50)
                {
                    ready.TrySetResult();
                }

                await wait;
                condition.Notify(); // pass it on from inside the wake-up
            }
            finally
            {
                condition.Release();
            }
        }).ToArray());
        await ready.Task.Bounded();
        using (await condition.AcquireAsync())
        {
            condition.Notify();
        }

        await Task.WhenAll(waiters).Bounded();
        condition.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AsyncResult_GetContinuationReadsTheSameResult_Completes()
    {
        var result = new AsyncResult<int>();
        Task<int>[] getters = InlineContext.Run(() => Enumerable.Range(0, Chain).Select(async _ =>
        {
            int value = await result.GetAsync();
            result.TrySet(value + 1).Should().BeFalse();
            return await result.GetAsync() + value;
        }).ToArray());
        result.Set(21);
        (await Task.WhenAll(getters).Bounded()).Should().OnlyContain(v => v == 42);
    }

    /// <summary>A synchronization context that runs posted callbacks inline, on the posting thread.</summary>
    private sealed class InlineContext : SynchronizationContext
    {
        /// <summary>Runs <paramref name="start"/> (which starts the waits) with this context current, so awaits capture it.</summary>
        public static T Run<T>(Func<T> start)
        {
            SynchronizationContext? previous = Current;
            SetSynchronizationContext(new InlineContext());
            try
            {
                return start();
            }
            finally
            {
                SetSynchronizationContext(previous);
            }
        }

        public override void Post(SendOrPostCallback d, object? state) => d(state);

        public override void Send(SendOrPostCallback d, object? state) => d(state);

        public override SynchronizationContext CreateCopy() => this;
    }
}
