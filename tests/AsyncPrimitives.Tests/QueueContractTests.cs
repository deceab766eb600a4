using AsyncPrimitives.Tests.Support;
using static AsyncPrimitives.Tests.Support.Settle;

namespace AsyncPrimitives.Tests;

/// <summary>
/// The contract every queue ordering must meet (in the style of dotnet/runtime's ChannelTestBase): one sealed
/// subclass per ordering runs all of these, plus its ordering-specific tests. Behaviour ported from Toro's
/// test_queues.py, tornado's queues_test.py and CPython's test_asyncio/test_queues.py (including 3.13 shutdown).
/// </summary>
public abstract class QueueContractTests
{
    protected static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    [ThreadStatic]
    private static bool t_insideCall;

    internal static (int ToFirst, int PassedOn) s_lastRace;

    /// <summary>The type name <c>ToString</c> starts with.</summary>
    protected abstract string QueueName { get; }

    protected abstract AsyncQueueBase<int> CreateQueue(int maxSize = 0, TimeProvider? timeProvider = null, string? name = null);

    /// <summary>A queue with a <see cref="AsyncQueueBase{T}.ResumeSize"/> (set by its object initializer).</summary>
    protected abstract AsyncQueueBase<int> CreateQueue(int maxSize, int resumeSize, TimeProvider? timeProvider = null);

    protected static Task<T> Bounded<T>(ValueTask<T> pending) => pending.AsTask().WaitAsync(Bound);

    protected static Task Bounded(ValueTask pending) => pending.AsTask().WaitAsync(Bound);

    // ---- construction and size ----

    [Fact]
    public void Constructor_NegativeMaxSize_Throws()
    {
        var create = () => CreateQueue(-1);
        create.Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("maxSize");
    }

    [Fact]
    public void Constructor_Default_IsUnboundedEmptyAndOpen()
    {
        var queue = CreateQueue();
        queue.MaxSize.Should().Be(0);
        queue.Count.Should().Be(0);
        queue.IsEmpty.Should().BeTrue();
        queue.IsFull.Should().BeFalse();
        queue.UnfinishedTasks.Should().Be(0);
        queue.IsShutDown.Should().BeFalse();
    }

    // ---- ResumeSize: the low-water mark for waiting putters ----

    [Fact]
    public void ResumeSize_DefaultsToMaxSizeMinusOne_AndToZeroWhenUnbounded()
    {
        CreateQueue(10).ResumeSize.Should().Be(9);
        CreateQueue(1).ResumeSize.Should().Be(0);
        CreateQueue().ResumeSize.Should().Be(0);
        CreateQueue(0, 0).ResumeSize.Should().Be(0);
        CreateQueue(10, 3).ResumeSize.Should().Be(3);
    }

    [Theory]
    [InlineData(4, -1)]
    [InlineData(4, 4)]
    [InlineData(4, 5)]
    [InlineData(1, 1)]
    [InlineData(0, 1)]
    [InlineData(0, -1)]
    public void ResumeSize_OutOfRange_ThrowsArgumentOutOfRangeNamingIt(int maxSize, int resumeSize)
    {
        FluentActions.Invoking(() => CreateQueue(maxSize, resumeSize))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("ResumeSize");
    }

    [Fact]
    public async Task ResumeSize_WaitingPuttersResumeOnlyAtOrBelowIt_ThenRefillTheQueueInFifoOrder()
    {
        var queue = CreateQueue(4, resumeSize: 1);
        for (int i = 0; i < 4; i++)
        {
            queue.TryPut(i).Should().BeTrue();
        }

        ValueTask[] putters = Enumerable.Range(4, 3).Select(i => queue.PutAsync(i)).ToArray();
        putters.Should().OnlyContain(p => !p.IsCompleted);
        var got = new List<int>();

        got.Add(await queue.GetAsync());
        got.Add(await queue.GetAsync());
        queue.Count.Should().Be(2);
        putters.Should().OnlyContain(p => !p.IsCompleted, "the count is still above ResumeSize");
        queue.TryPut(99).Should().BeFalse("a newcomer never barges past the waiting putters");

        got.Add(await queue.GetAsync()); // leaves 1 = ResumeSize: the putters move in
        putters.Should().OnlyContain(p => p.IsCompletedSuccessfully, "all three fit once the queue is refilled");
        queue.Count.Should().Be(4);
        queue.UnfinishedTasks.Should().Be(7);
        while (queue.TryGet(out int item))
        {
            got.Add(item);
        }

        got.Should().BeEquivalentTo(Enumerable.Range(0, 7));
    }

    [Fact]
    public async Task ResumeSize_MovesInOnlyAsManyPuttersAsRefillTheQueue()
    {
        var queue = CreateQueue(3, resumeSize: 0);
        for (int i = 0; i < 3; i++)
        {
            queue.TryPut(i).Should().BeTrue();
        }

        ValueTask[] putters = Enumerable.Range(3, 5).Select(i => queue.PutAsync(i)).ToArray();
        await queue.GetAsync();
        await queue.GetAsync();
        putters.Should().OnlyContain(p => !p.IsCompleted);

        await queue.GetAsync(); // leaves 0: three putters refill the queue, the other two keep waiting
        putters.Count(p => p.IsCompletedSuccessfully).Should().Be(3);
        putters.Take(3).Should().OnlyContain(p => p.IsCompletedSuccessfully, "putters move in oldest first");
        queue.Count.Should().Be(3);

        for (int i = 0; i < 3; i++)
        {
            await queue.GetAsync();
        }

        putters.Should().OnlyContain(p => p.IsCompletedSuccessfully);
        queue.Count.Should().Be(2);
    }

    [Fact]
    public async Task ResumeSize_APutterThatTimesOutWhileTheQueueDrains_EnqueuedNothing()
    {
        var time = new FakeTimeProvider();
        var queue = CreateQueue(2, resumeSize: 0, time);
        queue.TryPut(1).Should().BeTrue();
        queue.TryPut(2).Should().BeTrue();
        ValueTask put = queue.PutAsync(3, TimeSpan.FromSeconds(1));
        await queue.GetAsync();
        put.IsCompleted.Should().BeFalse();

        time.Advance(TimeSpan.FromSeconds(1));

        await FluentActions.Awaiting(() => put.AsTask()).Should().ThrowAsync<TimeoutException>();
        queue.Count.Should().Be(1);
        queue.UnfinishedTasks.Should().Be(2);
        queue.TryPut(4).Should().BeTrue("with nobody waiting, a put into a queue that is not full goes in at once");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(8)]
    [InlineData(15)]
    public async Task ResumeSize_OneProducerOneConsumer_LoseAndDuplicateNothing(int resumeSize)
    {
        const int Items = 20_000;
        var queue = CreateQueue(16, resumeSize);
        var got = new List<int>(Items);
        await StepLoop.RunAsync(step => Task.WhenAll(
            Task.Run(async () =>
            {
                for (int i = 0; i < Items; i++)
                {
                    step();
                    await queue.PutAsync(i).ConfigureAwait(false);
                }
            }),
            Task.Run(async () =>
            {
                for (int i = 0; i < Items; i++)
                {
                    step();
                    got.Add(await queue.GetAsync().ConfigureAwait(false));
                }
            })));

        got.Should().BeEquivalentTo(Enumerable.Range(0, Items));
        queue.Count.Should().Be(0);
        queue.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public void MaxSize_BoundsCount_AndIsFull()
    {
        var queue = CreateQueue(2);
        queue.MaxSize.Should().Be(2);
        queue.TryPut(1).Should().BeTrue();
        queue.IsEmpty.Should().BeFalse();
        queue.IsFull.Should().BeFalse();
        queue.TryPut(2).Should().BeTrue();
        queue.IsFull.Should().BeTrue();
        queue.Count.Should().Be(2);
        queue.TryPut(3).Should().BeFalse();
        queue.Count.Should().Be(2);
        queue.TryGet(out _).Should().BeTrue();
        queue.IsFull.Should().BeFalse();
        queue.Count.Should().Be(1);
    }

    [Fact]
    public void Unbounded_IsNeverFull()
    {
        var queue = CreateQueue();
        for (int i = 0; i < 1000; i++)
        {
            queue.TryPut(i).Should().BeTrue();
        }

        queue.IsFull.Should().BeFalse();
        queue.Count.Should().Be(1000);
        var got = new List<int>();
        while (queue.TryGet(out int item))
        {
            got.Add(item);
        }

        got.Order().Should().Equal(Enumerable.Range(0, 1000));
        queue.IsEmpty.Should().BeTrue();
    }

    [Fact]
    public async Task PutAsync_AndGetAsync_WhenNotBlocked_CompleteSynchronously()
    {
        var queue = CreateQueue(1);
        queue.PutAsync(7).IsCompletedSuccessfully.Should().BeTrue();
        var get = queue.GetAsync();
        get.IsCompletedSuccessfully.Should().BeTrue();
        (await get).Should().Be(7);
    }

    // ---- waiting getters and putters ----

    [Fact]
    public async Task GetAsync_WhenEmpty_WaitsUntilPut()
    {
        var queue = CreateQueue();
        var getter = queue.GetAsync().AsTask();
        getter.IsCompleted.Should().BeFalse();
        queue.Lines.Waiting.Should().Be(1);

        await queue.PutAsync(5);

        (await getter.WaitAsync(Bound)).Should().Be(5);
        queue.Count.Should().Be(0, "the item went straight to the waiting getter");
        queue.UnfinishedTasks.Should().Be(1, "a hand-off counts as entering the queue");
    }

    [Fact]
    public async Task GetAsync_WhenEmpty_WaitsInFifoOrder()
    {
        var queue = CreateQueue();
        var getters = Enumerable.Range(0, 3).Select(_ => queue.GetAsync().AsTask()).ToArray();

        await queue.PutAsync(10);
        await queue.PutAsync(20);
        await queue.PutAsync(30);

        (await Task.WhenAll(getters).WaitAsync(Bound)).Should().Equal(10, 20, 30);
    }

    [Fact]
    public async Task PutAsync_WhenFull_WaitsUntilGet()
    {
        var queue = CreateQueue(1);
        await queue.PutAsync(1);
        var putter = queue.PutAsync(2).AsTask();
        putter.IsCompleted.Should().BeFalse();
        queue.Lines.Waiting.Should().Be(1);
        queue.UnfinishedTasks.Should().Be(1, "a waiting putter's item has not entered the queue");

        int first = await Bounded(queue.GetAsync());

        await putter.WaitAsync(Bound);
        queue.Count.Should().Be(1);
        queue.UnfinishedTasks.Should().Be(2);
        int second = await Bounded(queue.GetAsync());
        new[] { first, second }.Should().BeEquivalentTo(new[] { 1, 2 });
    }

    [Fact]
    public async Task PutAsync_WhenFull_WaitsInFifoOrder()
    {
        var queue = CreateQueue(1);
        await queue.PutAsync(0);
        var putters = Enumerable.Range(1, 3).Select(i => queue.PutAsync(i).AsTask()).ToArray();

        for (int served = 0; served < 3; served++)
        {
            queue.TryGet(out _).Should().BeTrue();
            await putters[served].WaitAsync(Bound);
            putters.Skip(served + 1).Any(p => p.IsCompleted).Should().BeFalse("only the oldest putter moves in");
        }

        queue.Count.Should().Be(1);
    }

    [Fact]
    public async Task TryPut_WhenFullOrPuttersWait_ReturnsFalseWithoutWaiting()
    {
        var queue = CreateQueue(1);
        queue.TryPut(1).Should().BeTrue();
        queue.TryPut(2).Should().BeFalse();
        var putter = queue.PutAsync(3).AsTask();
        queue.TryPut(4).Should().BeFalse("a newcomer never barges past a waiting putter");
        queue.Lines.Waiting.Should().Be(1);
        queue.UnfinishedTasks.Should().Be(1);

        queue.TryGet(out _).Should().BeTrue();
        await putter.WaitAsync(Bound);
        queue.Count.Should().Be(1);
    }

    [Fact]
    public async Task TryPut_WhenGetterWaits_HandsTheItemOver()
    {
        var queue = CreateQueue(1);
        var getter = queue.GetAsync().AsTask();
        queue.TryPut(9).Should().BeTrue();
        (await getter.WaitAsync(Bound)).Should().Be(9);
        queue.Count.Should().Be(0);
        queue.UnfinishedTasks.Should().Be(1);
    }

    [Fact]
    public async Task TryGet_WhenEmpty_ReturnsFalse_AndWhenPutterWaits_MovesItsItemIn()
    {
        var queue = CreateQueue(1);
        queue.TryGet(out int none).Should().BeFalse();
        none.Should().Be(0);

        queue.TryPut(1).Should().BeTrue();
        var putter = queue.PutAsync(2).AsTask();
        queue.TryGet(out int first).Should().BeTrue();
        await putter.WaitAsync(Bound);
        queue.TryGet(out int second).Should().BeTrue();
        new[] { first, second }.Should().BeEquivalentTo(new[] { 1, 2 });
        queue.TryGet(out _).Should().BeFalse();
        queue.UnfinishedTasks.Should().Be(2);
    }

    // ---- timeouts ----

    [Fact]
    public async Task GetAsync_TimedOut_TakesNothing_AndTheNextGetterGetsTheItem()
    {
        var time = new FakeTimeProvider();
        var queue = CreateQueue(timeProvider: time);
        var timed = queue.GetAsync(TimeSpan.FromSeconds(1)).AsTask();
        var patient = queue.GetAsync().AsTask();

        time.Advance(TimeSpan.FromSeconds(1));
        await timed.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<TimeoutException>();
        queue.Lines.Waiting.Should().Be(1);

        await queue.PutAsync(42);
        (await patient.WaitAsync(Bound)).Should().Be(42);
        queue.Count.Should().Be(0);
    }

    [Fact]
    public async Task PutAsync_TimedOut_ItsItemNeverEnters()
    {
        var time = new FakeTimeProvider();
        var queue = CreateQueue(1, time);
        await queue.PutAsync(1);
        var timed = queue.PutAsync(2, TimeSpan.FromSeconds(1)).AsTask();

        time.Advance(TimeSpan.FromMilliseconds(999));
        timed.IsCompleted.Should().BeFalse();
        time.Advance(TimeSpan.FromMilliseconds(1));
        await timed.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<TimeoutException>();

        queue.Lines.Waiting.Should().Be(0);
        queue.UnfinishedTasks.Should().Be(1);
        queue.TryGet(out int item).Should().BeTrue();
        item.Should().Be(1);
        queue.TryGet(out _).Should().BeFalse("the timed-out put did not enqueue its item");
    }

    [Fact]
    public async Task Waits_WithTimeoutSatisfiedInTime_DoNotTimeOut()
    {
        var time = new CountingTimeProvider();
        var queue = CreateQueue(1, time);
        var getter = queue.GetAsync(TimeSpan.FromSeconds(1)).AsTask();
        await queue.PutAsync(1);
        (await getter.WaitAsync(Bound)).Should().Be(1);
        time.Advance(TimeSpan.FromSeconds(5));
        time.ActiveTimers.Should().Be(0, "a served waiter disposes its timer");

        await queue.PutAsync(2);
        var putter = queue.PutAsync(3, TimeSpan.FromSeconds(1)).AsTask();
        queue.TryGet(out _).Should().BeTrue();
        await putter.WaitAsync(Bound);
        time.Advance(TimeSpan.FromSeconds(5));
        queue.Count.Should().Be(1);
    }

    [Fact]
    public async Task ZeroTimeout_SucceedsNowOrTimesOutNow()
    {
        var queue = CreateQueue(1);
        var emptyGet = queue.GetAsync(TimeSpan.Zero);
        emptyGet.IsFaulted.Should().BeTrue();
        emptyGet.AsTask().Exception!.InnerException.Should().BeOfType<TimeoutException>();

        queue.PutAsync(1, TimeSpan.Zero).IsCompletedSuccessfully.Should().BeTrue();
        var fullPut = queue.PutAsync(2, TimeSpan.Zero);
        fullPut.IsFaulted.Should().BeTrue();
        fullPut.AsTask().Exception!.InnerException.Should().BeOfType<TimeoutException>();

        var join = queue.JoinAsync(TimeSpan.Zero);
        join.IsFaulted.Should().BeTrue();
        join.AsTask().Exception!.InnerException.Should().BeOfType<TimeoutException>();

        var get = queue.GetAsync(TimeSpan.Zero);
        get.IsCompletedSuccessfully.Should().BeTrue();
        (await get).Should().Be(1);
        queue.TaskDone();
        queue.JoinAsync(TimeSpan.Zero).IsCompletedSuccessfully.Should().BeTrue();
        queue.Lines.Waiting.Should().Be(0);
    }

    [Theory]
    [InlineData(-2)]
    [InlineData(-1000)]
    public void Waits_WithInvalidTimeout_ThrowAtTheCall(int milliseconds)
    {
        var queue = CreateQueue();
        var timeout = TimeSpan.FromMilliseconds(milliseconds);
        queue.Invoking(q => q.PutAsync(1, timeout)).Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
        queue.Invoking(q => q.GetAsync(timeout)).Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
        queue.Invoking(q => q.JoinAsync(timeout)).Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
        queue.Count.Should().Be(0);
    }

    [Fact]
    public async Task Waits_WithInfiniteTimeout_AreAccepted()
    {
        var queue = CreateQueue();
        var getter = queue.GetAsync(Timeout.InfiniteTimeSpan).AsTask();
        await queue.PutAsync(3, Timeout.InfiniteTimeSpan);
        (await getter.WaitAsync(Bound)).Should().Be(3);
        queue.TaskDone();
        await Bounded(queue.JoinAsync(Timeout.InfiniteTimeSpan));
    }

    // ---- cancellation ----

    [Fact]
    public async Task PreCancelledToken_CancelsAtOnce_EvenWhenTheCallCouldSucceed()
    {
        var queue = CreateQueue(2);
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        queue.PutAsync(1, cts.Token).IsCanceled.Should().BeTrue();
        queue.PutAsync(1, TimeSpan.FromSeconds(1), cts.Token).IsCanceled.Should().BeTrue();
        queue.Count.Should().Be(0);

        queue.TryPut(2).Should().BeTrue();
        queue.GetAsync(cts.Token).IsCanceled.Should().BeTrue();
        queue.GetAsync(TimeSpan.Zero, cts.Token).IsCanceled.Should().BeTrue();
        queue.Count.Should().Be(1, "a cancelled get takes nothing");

        queue.TryGet(out _).Should().BeTrue();
        queue.TaskDone();
        queue.JoinAsync(cts.Token).IsCanceled.Should().BeTrue();
        queue.JoinAsync(TimeSpan.Zero, cts.Token).IsCanceled.Should().BeTrue();

        await using var enumerator = queue.GetAsyncEnumerator(cts.Token);
        queue.TryPut(3).Should().BeTrue();
        await enumerator.Invoking(e => e.MoveNextAsync().AsTask()).Should().ThrowAsync<OperationCanceledException>();
        queue.Count.Should().Be(1);
    }

    [Fact]
    public async Task GetAsync_Cancelled_TakesNothing_AndTheNextGetterGetsTheItem()
    {
        var queue = CreateQueue();
        using var cts = new CancellationTokenSource();
        var cancelled = queue.GetAsync(cts.Token).AsTask();
        var patient = queue.GetAsync().AsTask();

        cts.Cancel();
        (await cancelled.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>())
            .Which.CancellationToken.Should().Be(cts.Token);

        await queue.PutAsync(8);
        (await patient.WaitAsync(Bound)).Should().Be(8);
    }

    [Fact]
    public async Task PutAsync_Cancelled_ItsItemNeverEnters()
    {
        var queue = CreateQueue(1);
        await queue.PutAsync(1);
        using var cts = new CancellationTokenSource();
        var cancelled = queue.PutAsync(2, cts.Token).AsTask();
        var patient = queue.PutAsync(3).AsTask();

        cts.Cancel();
        await cancelled.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();

        var got = new List<int> { await Bounded(queue.GetAsync()) };
        await patient.WaitAsync(Bound);
        got.Add(await Bounded(queue.GetAsync()));
        got.Should().BeEquivalentTo(new[] { 1, 3 });
        queue.UnfinishedTasks.Should().Be(2);
    }

    [Fact]
    public async Task GetAsync_CancelledAsAnItemIsHandedOver_NeverLosesTheItem()
    {
        // Tornado #2826: a getter cancelled at the moment a put hands it the item lost the item. Here exactly one
        // side wins: the getter returns the item, or it throws and the item goes to the next getter / stays queued.
        const int Rounds = 400;
        var jitter = new Random(2826);
        int toFirst = 0, passedOn = 0;
        for (int i = 0; i < Rounds; i++)
        {
            var queue = CreateQueue();
            using var cts = new CancellationTokenSource();
            bool withSecondGetter = i % 2 == 0;
            var first = queue.GetAsync(cts.Token).AsTask();
            var second = withSecondGetter ? queue.GetAsync().AsTask() : null;

            var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            int cancelJitter = jitter.Next(0, 20_000), putJitter = jitter.Next(0, 20_000);
            var cancel = Task.Run(async () => { await go.Task; Thread.SpinWait(cancelJitter); cts.Cancel(); });
            var put = Task.Run(async () => { await go.Task; Thread.SpinWait(putJitter); await queue.PutAsync(i); });
            go.SetResult();
            await Task.WhenAll(cancel, put).WaitAsync(Bound);

            int received = 0;
            try
            {
                (await first.WaitAsync(Bound)).Should().Be(i);
                received++;
                toFirst++;
            }
            catch (OperationCanceledException)
            {
                passedOn++;
            }

            if (received == 1)
            {
                queue.Count.Should().Be(0);
                if (second is not null)
                {
                    second.IsCompleted.Should().BeFalse("the item went to the first getter");
                    queue.Shutdown();
                    await second.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>();
                }
            }
            else if (second is not null)
            {
                (await second.WaitAsync(Bound)).Should().Be(i, "the cancelled getter passed the item on");
            }
            else
            {
                queue.TryGet(out int left).Should().BeTrue("the cancelled getter left the item queued");
                left.Should().Be(i);
            }

            queue.UnfinishedTasks.Should().Be(1, "the item entered the queue exactly once");
        }

        (toFirst + passedOn).Should().Be(Rounds);
        s_lastRace = (toFirst, passedOn);
    }

    // ---- TaskDone / JoinAsync ----

    [Fact]
    public void TaskDone_MoreTimesThanItems_Throws()
    {
        var queue = CreateQueue();
        queue.Invoking(q => q.TaskDone()).Should().Throw<InvalidOperationException>();
        queue.TryPut(1).Should().BeTrue();
        queue.TryGet(out _).Should().BeTrue();
        queue.TaskDone();
        queue.Invoking(q => q.TaskDone()).Should().Throw<InvalidOperationException>();
        queue.UnfinishedTasks.Should().Be(0);
    }

    [Fact]
    public void JoinAsync_WhenNothingUnfinished_CompletesSynchronously()
    {
        var queue = CreateQueue();
        queue.JoinAsync().IsCompletedSuccessfully.Should().BeTrue();
        queue.TryPut(1).Should().BeTrue();
        queue.JoinAsync().IsCompleted.Should().BeFalse();
    }

    [Fact]
    public async Task JoinAsync_CompletesWhenEveryItemIsDone()
    {
        var queue = CreateQueue();
        for (int i = 0; i < 5; i++)
        {
            await queue.PutAsync(i);
        }

        var joiners = new[] { queue.JoinAsync().AsTask(), queue.JoinAsync().AsTask() };
        for (int i = 0; i < 5; i++)
        {
            joiners.Should().OnlyContain(j => !j.IsCompleted);
            queue.TryGet(out _).Should().BeTrue();
            queue.UnfinishedTasks.Should().Be(5 - i, "getting an item does not finish it");
            queue.TaskDone();
        }

        await Task.WhenAll(joiners).WaitAsync(Bound);
        queue.UnfinishedTasks.Should().Be(0);
    }

    [Fact]
    public async Task JoinAsync_WithTimeout_TimesOutWhileTasksAreUnfinished()
    {
        var time = new FakeTimeProvider();
        var queue = CreateQueue(timeProvider: time);
        queue.TryPut(1).Should().BeTrue();
        var join = queue.JoinAsync(TimeSpan.FromSeconds(1)).AsTask();
        time.Advance(TimeSpan.FromSeconds(1));
        await join.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<TimeoutException>();

        var later = queue.JoinAsync(TimeSpan.FromSeconds(1)).AsTask();
        queue.TryGet(out _).Should().BeTrue();
        queue.TaskDone();
        await later.WaitAsync(Bound);
    }

    [Fact]
    public async Task JoinAsync_Cancelled_Throws()
    {
        var queue = CreateQueue();
        queue.TryPut(1).Should().BeTrue();
        using var cts = new CancellationTokenSource();
        var join = queue.JoinAsync(cts.Token).AsTask();
        cts.Cancel();
        await join.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    // ---- shutdown (Python 3.13) ----

    [Fact]
    public async Task Shutdown_WhenEmpty_FailsWaitingGetters_AndLaterGetsThrow()
    {
        var queue = CreateQueue();
        var getters = Enumerable.Range(0, 3).Select(_ => queue.GetAsync().AsTask()).ToArray();

        queue.Shutdown();

        queue.IsShutDown.Should().BeTrue();
        foreach (var getter in getters)
        {
            await getter.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>();
        }

        queue.GetAsync().IsFaulted.Should().BeTrue();
        await queue.Invoking(q => q.GetAsync(TimeSpan.FromSeconds(1)).AsTask()).Should().ThrowAsync<QueueShutDownException>();
        queue.Invoking(q => q.TryGet(out _)).Should().Throw<QueueShutDownException>();
    }

    [Fact]
    public async Task Shutdown_EachWaitingGetterGetsAShutdownExceptionOfItsOwn()
    {
        var queue = CreateQueue();
        Task<int>[] getters = Enumerable.Range(0, 10).Select(_ => queue.GetAsync().AsTask()).ToArray();

        queue.Shutdown();

        var failures = new List<QueueShutDownException>();
        foreach (Task<int> getter in getters)
        {
            failures.Add(await ThrowsSoon<QueueShutDownException>(getter));
        }

        failures.Distinct().Should().HaveCount(getters.Length, "as each call after the shutdown, each waiter gets its own exception");
        failures.Select(Traces.Rethrows).Distinct().Should().ContainSingle("no getter's trace carries another getter's throw");
    }

    [Fact]
    public async Task Shutdown_WhenNotEmpty_GetsDrainWhatIsLeft_ThenThrow()
    {
        var queue = CreateQueue();
        for (int i = 0; i < 3; i++)
        {
            await queue.PutAsync(i);
        }

        queue.Shutdown();

        var drained = new List<int> { await Bounded(queue.GetAsync()) };
        queue.TryGet(out int second).Should().BeTrue();
        drained.Add(second);
        drained.Add(await Bounded(queue.GetAsync(TimeSpan.Zero)));
        drained.Should().BeEquivalentTo(new[] { 0, 1, 2 });
        await queue.Invoking(q => q.GetAsync().AsTask()).Should().ThrowAsync<QueueShutDownException>();
        queue.UnfinishedTasks.Should().Be(3, "a normal shutdown drops nothing");
    }

    [Fact]
    public async Task Shutdown_PutsAfterwardThrow()
    {
        var queue = CreateQueue(1);
        queue.Shutdown();

        var put = queue.PutAsync(1);
        put.IsFaulted.Should().BeTrue();
        await put.AsTask().Invoking(t => t).Should().ThrowAsync<QueueShutDownException>();
        await queue.Invoking(q => q.PutAsync(1, TimeSpan.Zero).AsTask()).Should().ThrowAsync<QueueShutDownException>();
        queue.Invoking(q => q.TryPut(1)).Should().Throw<QueueShutDownException>();
        queue.Count.Should().Be(0);
        queue.UnfinishedTasks.Should().Be(0);
    }

    [Fact]
    public async Task Shutdown_FailsWaitingPutters_TheirItemsNeverEnter()
    {
        var queue = CreateQueue(1);
        await queue.PutAsync(1);
        var putters = new[] { queue.PutAsync(2).AsTask(), queue.PutAsync(3).AsTask() };

        queue.Shutdown();

        foreach (var putter in putters)
        {
            await putter.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>();
        }

        queue.TryGet(out int item).Should().BeTrue();
        item.Should().Be(1);
        queue.Invoking(q => q.TryGet(out _)).Should().Throw<QueueShutDownException>();
        queue.UnfinishedTasks.Should().Be(1);
    }

    [Fact]
    public async Task Shutdown_Immediate_DropsTheItems_CountsThemDone_AndCompletesJoiners()
    {
        var queue = CreateQueue(3);
        for (int i = 0; i < 3; i++)
        {
            await queue.PutAsync(i);
        }

        var putter = queue.PutAsync(99).AsTask();
        var join = queue.JoinAsync().AsTask();

        queue.Shutdown(immediate: true);

        await join.WaitAsync(Bound);
        await putter.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>();
        queue.Count.Should().Be(0);
        queue.UnfinishedTasks.Should().Be(0);
        queue.Invoking(q => q.TryGet(out _)).Should().Throw<QueueShutDownException>();
    }

    [Fact]
    public async Task Shutdown_Immediate_KeepsItemsAlreadyTakenUnfinished()
    {
        var queue = CreateQueue();
        for (int i = 0; i < 3; i++)
        {
            await queue.PutAsync(i);
        }

        queue.TryGet(out _).Should().BeTrue(); // taken, still being processed
        var join = queue.JoinAsync().AsTask();

        queue.Shutdown(immediate: true);

        queue.UnfinishedTasks.Should().Be(1);
        join.IsCompleted.Should().BeFalse("the taken item is not done yet");
        queue.TaskDone();
        await join.WaitAsync(Bound);
    }

    [Fact]
    public async Task Shutdown_IsIdempotent_AndImmediateAfterNormalStillDrops()
    {
        var queue = CreateQueue();
        await queue.PutAsync(1);
        await queue.PutAsync(2);

        queue.Shutdown();
        queue.Shutdown();
        queue.Count.Should().Be(2);

        queue.Shutdown(immediate: true);
        queue.Count.Should().Be(0);
        queue.UnfinishedTasks.Should().Be(0);
        queue.Shutdown(immediate: true);
        queue.IsShutDown.Should().BeTrue();
    }

    // ---- await foreach ----

    [Fact]
    public async Task AwaitForeach_EndsWhenShutDownAndEmpty_AndDoesNotCallTaskDone()
    {
        var queue = CreateQueue();
        await queue.PutAsync(1);
        await queue.PutAsync(2);
        var firstTwo = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumed = new List<int>();
        var consumer = Task.Run(async () =>
        {
            await foreach (int item in queue)
            {
                consumed.Add(item);
                if (consumed.Count == 2)
                {
                    firstTwo.SetResult();
                }
            }
        });

        await firstTwo.Task.WaitAsync(Bound);
        await queue.PutAsync(3); // the consumer may be waiting on the empty queue now
        await queue.PutAsync(4);
        queue.Shutdown();
        await consumer.WaitAsync(Bound);

        consumed.Should().HaveCount(4).And.BeEquivalentTo(new[] { 1, 2, 3, 4 });
        queue.UnfinishedTasks.Should().Be(4, "enumeration does not call TaskDone");
    }

    [Fact]
    public async Task AwaitForeach_WaitingOnAnEmptyQueue_EndsAtShutdown()
    {
        var queue = CreateQueue();
        var enumerator = queue.GetAsyncEnumerator();
        var move = enumerator.MoveNextAsync().AsTask();
        move.IsCompleted.Should().BeFalse();
        queue.Shutdown();
        (await move.WaitAsync(Bound)).Should().BeFalse();
        (await enumerator.MoveNextAsync()).Should().BeFalse();
        await enumerator.DisposeAsync();
    }

    [Fact]
    public async Task AwaitForeach_Cancelled_ThrowsAndTakesNothing()
    {
        var queue = CreateQueue();
        using var cts = new CancellationTokenSource();
        await using var enumerator = queue.GetAsyncEnumerator(cts.Token);
        var move = enumerator.MoveNextAsync().AsTask();
        cts.Cancel();
        await move.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        await queue.PutAsync(1);
        queue.Count.Should().Be(1);
    }

    // ---- ToString ----

    [Fact]
    public async Task ToString_ShowsTheStateLikeToro()
    {
        var queue = CreateQueue(10);
        for (int i = 0; i < 3; i++)
        {
            await queue.PutAsync(i);
        }

        queue.ToString().Should().Be($"{QueueName}(maxSize=10, count=3, getters=0, putters=0, unfinished=3)");

        var full = CreateQueue(1);
        await full.PutAsync(1);
        var putter = full.PutAsync(2).AsTask();
        full.ToString().Should().Be($"{QueueName}(maxSize=1, count=1, getters=0, putters=1, unfinished=1)");
        full.Shutdown();
        await putter.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>();
        full.ToString().Should().Be($"{QueueName}(maxSize=1, count=1, getters=0, putters=0, unfinished=1, shutdown)");

        var unbounded = CreateQueue();
        var getter = unbounded.GetAsync().AsTask();
        unbounded.ToString().Should().Be($"{QueueName}(maxSize=unbounded, count=0, getters=1, putters=0, unfinished=0)");
        unbounded.Shutdown();
        await getter.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<QueueShutDownException>();
    }

    [Fact]
    public async Task ToString_WithAName_ShowsItFirst()
    {
        var queue = CreateQueue(10, name: "jobs");
        queue.Name.Should().Be("jobs");
        await queue.PutAsync(1);

        queue.ToString().Should().Be($"{QueueName}(name=\"jobs\", maxSize=10, count=1, getters=0, putters=0, unfinished=1)");
        CreateQueue().Name.Should().BeNull();
    }

    // ---- continuations never run inline ----

    [Fact]
    public async Task PutAsync_DoesNotRunTheGettersContinuationInline()
    {
        var queue = CreateQueue();
        var observed = ObserveAsync(queue.GetAsync());

        t_insideCall = true;
        try
        {
            queue.PutAsync(1).IsCompletedSuccessfully.Should().BeTrue();
        }
        finally
        {
            t_insideCall = false;
        }

        (await observed.WaitAsync(Bound)).Should().BeFalse("the getter must resume after PutAsync returned, not inside it");
    }

    [Fact]
    public async Task GetAsync_TaskDone_AndShutdown_DoNotRunWaitersContinuationsInline()
    {
        var queue = CreateQueue(1);
        queue.TryPut(1).Should().BeTrue();
        var putterObserved = ObserveAsync(queue.PutAsync(2));
        var joinObserved = ObserveAsync(queue.JoinAsync());

        t_insideCall = true;
        try
        {
            queue.TryGet(out _).Should().BeTrue();  // moves the putter in
            queue.TryGet(out _).Should().BeTrue();
            queue.TaskDone();
            queue.TaskDone();                        // completes the joiner
        }
        finally
        {
            t_insideCall = false;
        }

        (await putterObserved.WaitAsync(Bound)).Should().BeFalse();
        (await joinObserved.WaitAsync(Bound)).Should().BeFalse();

        var getterObserved = ObserveAsync(queue.GetAsync());
        t_insideCall = true;
        try
        {
            queue.Shutdown();
        }
        finally
        {
            t_insideCall = false;
        }

        (await getterObserved.WaitAsync(Bound)).Should().BeFalse();
    }

    /// <summary>Awaits without a context and reports whether the continuation ran inside a marked call on its thread.</summary>
    private static async Task<bool> ObserveAsync<T>(ValueTask<T> pending)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        catch (QueueShutDownException)
        {
        }

        return t_insideCall;
    }

    private static async Task<bool> ObserveAsync(ValueTask pending)
    {
        await pending.ConfigureAwait(false);
        return t_insideCall;
    }

    // ---- allocation ----

    [Fact]
    public void UncontendedOperations_AllocateNothing()
    {
        var queue = CreateQueue(16);
        RunUncontended(queue, 100); // warm up: JIT, tiering, statics

        // The least of three measurements: a one-time allocation by the runtime that lands in one of them (it happened
        // once in CI on the netstandard2.0 asset, about 6 KB) is not the queue's; one per operation would be in all three.
        long allocated = long.MaxValue;
        for (int attempt = 0; attempt < 3 && allocated != 0; attempt++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            int failures = RunUncontended(queue, 1000);
            allocated = Math.Min(allocated, GC.GetAllocatedBytesForCurrentThread() - before);
            failures.Should().Be(0);
        }

        allocated.Should().Be(0);
    }

    private static int RunUncontended(AsyncQueueBase<int> queue, int rounds)
    {
        int failures = 0;
        for (int i = 0; i < rounds; i++)
        {
            if (!queue.TryPut(i) || !queue.TryGet(out int a) || a != i)
            {
                failures++;
            }

            ValueTask put = queue.PutAsync(i);
            if (!put.IsCompletedSuccessfully)
            {
                failures++;
            }

            ValueTask<int> get = queue.GetAsync();
            if (!get.IsCompletedSuccessfully || get.Result != i)
            {
                failures++;
            }

            put = queue.PutAsync(i, TimeSpan.Zero);
            get = queue.GetAsync(TimeSpan.FromSeconds(1));
            if (!put.IsCompletedSuccessfully || !get.IsCompletedSuccessfully || get.Result != i)
            {
                failures++;
            }

            queue.TaskDone();
            queue.TaskDone();
            queue.TaskDone();
            if (!queue.JoinAsync().IsCompletedSuccessfully)
            {
                failures++;
            }
        }

        return failures;
    }

    // ---- adversarial stress ----

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public async Task ProducersAndConsumers_WithTimeoutsAndCancellation_ConserveEveryItem(int maxSize)
    {
        const int Producers = 8, Consumers = 8, PerProducer = 2000;
        const int Total = Producers * PerProducer;
        var queue = CreateQueue(maxSize);
        var got = new int[Total];
        var rejected = new int[Total];
        int done = 0;

        var producers = Enumerable.Range(0, Producers).Select(p => Task.Run(async () =>
        {
            var rng = new Random(p);
            for (int i = 0; i < PerProducer; i++)
            {
                int id = (p * PerProducer) + i;
                using var cts = new CancellationTokenSource();
                try
                {
                    switch (rng.Next(6))
                    {
                        case 0:
                            await queue.PutAsync(id);
                            break;
                        case 1:
                            await queue.PutAsync(id, TimeSpan.Zero);
                            break;
                        case 2:
                            await queue.PutAsync(id, TimeSpan.FromMilliseconds(rng.Next(1, 3)));
                            break;
                        case 3:
                            var pending = queue.PutAsync(id, cts.Token);
                            cts.Cancel();
                            await pending;
                            break;
                        case 4:
                            var yielding = queue.PutAsync(id, cts.Token);
                            await Task.Yield();
                            cts.Cancel();
                            await yielding;
                            break;
                        default:
                            if (!queue.TryPut(id))
                            {
                                rejected[id]++;
                            }

                            break;
                    }
                }
                catch (Exception e) when (e is TimeoutException or OperationCanceledException)
                {
                    rejected[id]++;
                }
            }
        })).ToArray();

        var consumers = Enumerable.Range(0, Consumers).Select(c => Task.Run(async () =>
        {
            var rng = new Random(100 + c);
            while (true)
            {
                using var cts = new CancellationTokenSource();
                int item;
                try
                {
                    switch (rng.Next(6))
                    {
                        case 0:
                            item = await queue.GetAsync();
                            break;
                        case 1:
                            item = await queue.GetAsync(TimeSpan.Zero);
                            break;
                        case 2:
                            item = await queue.GetAsync(TimeSpan.FromMilliseconds(rng.Next(1, 3)));
                            break;
                        case 3:
                            var pending = queue.GetAsync(cts.Token);
                            cts.Cancel();
                            item = await pending;
                            break;
                        case 4:
                            var yielding = queue.GetAsync(cts.Token);
                            await Task.Yield();
                            cts.Cancel();
                            item = await yielding;
                            break;
                        default:
                            if (!queue.TryGet(out item))
                            {
                                await Task.Yield();
                                continue;
                            }

                            break;
                    }
                }
                catch (Exception e) when (e is TimeoutException or OperationCanceledException)
                {
                    await Task.Yield();
                    continue;
                }
                catch (QueueShutDownException)
                {
                    return;
                }

                Interlocked.Increment(ref got[item]);
                queue.TaskDone();
                Interlocked.Increment(ref done);
            }
        })).ToArray();

        await Task.WhenAll(producers).WaitAsync(Bound);
        await Bounded(queue.JoinAsync());
        queue.Shutdown();
        await Task.WhenAll(consumers).WaitAsync(Bound);

        for (int id = 0; id < Total; id++)
        {
            (got[id] + rejected[id]).Should().Be(1, $"item {id} is either got exactly once or rejected to its putter");
        }

        done.Should().Be(got.Sum());
        queue.UnfinishedTasks.Should().Be(0);
        queue.Count.Should().Be(0);
        queue.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task Timeouts_OfPutGetAndJoin_RunOnTheGivenTimeProvider()
    {
        var time = new CountingTimeProvider();
        var queue = CreateQueue(1, time);
        Task<int> get = queue.GetAsync(TimeSpan.FromSeconds(5)).AsTask();
        queue.TryPut(1).Should().BeTrue(); // hands it to the getter
        (await get.WaitAsync(Bound)).Should().Be(1);
        queue.TryPut(2).Should().BeTrue();
        Task put = queue.PutAsync(3, TimeSpan.FromSeconds(5)).AsTask();
        Task join = queue.JoinAsync(TimeSpan.FromSeconds(5)).AsTask();
        time.ActiveTimers.Should().Be(2);
        time.Advance(TimeSpan.FromSeconds(5));
        await put.Invoking(t => t).Should().ThrowAsync<TimeoutException>();
        await join.Invoking(t => t).Should().ThrowAsync<TimeoutException>();
        queue.Count.Should().Be(1, "the timed-out put did not enqueue");
    }
}
