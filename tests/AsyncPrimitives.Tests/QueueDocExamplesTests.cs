namespace AsyncPrimitives.Tests;

/// <summary>
/// The queue examples shown in docs/primitives.md, compiled and run. The docs are refreshed from the <c>// doc:</c>
/// regions (see DocSnippetsTests). Each example runs under a bound, outside its region, so a regression fails instead
/// of hanging.
/// </summary>
public sealed class QueueDocExamplesTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private static Task Bounded(Func<Task> example) => example().WaitAsync(Bound);

    [Fact]
    public void SizeExample_TryPutOnAFullQueue_FailsWithoutWaiting()
    {
        // doc: queues-size
        var queue = new AsyncQueue<int>(maxSize: 2);
        queue.TryPut(1).Should().BeTrue();
        queue.TryPut(2).Should().BeTrue();
        queue.IsFull.Should().BeTrue();
        queue.TryPut(3).Should().BeFalse();   // never waits
        // end doc
        queue.Count.Should().Be(2);
    }

    [Fact]
    public Task LifoOrderExample_WithPuttersWaiting_IncludesTheirItems() => Bounded(async () =>
    {
        // doc: queues-lifo-order
        // Toro's LIFO order test: full at [1, 0] (0 pushed last), puts of 3 then 2 waiting.
        var queue = new AsyncLifoQueue<int>(maxSize: 2);
        queue.TryPut(1).Should().BeTrue();
        queue.TryPut(0).Should().BeTrue();
        var put3 = queue.PutAsync(3).AsTask();
        var put2 = queue.PutAsync(2).AsTask();

        queue.TryGet(out int first).Should().BeTrue();
        first.Should().Be(3);
        (await queue.GetAsync()).Should().Be(2);
        queue.TryGet(out int third).Should().BeTrue();
        third.Should().Be(0);
        (await queue.GetAsync()).Should().Be(1);
        // end doc
        await Task.WhenAll(put3, put2);
    });

    [Fact]
    public Task TimeoutExample_TimedOutGet_TakesNothing() => Bounded(async () =>
    {
        // doc: queues-timeout
        var time = new FakeTimeProvider();
        var queue = new AsyncQueue<int>(timeProvider: time);
        var timed = queue.GetAsync(TimeSpan.FromSeconds(1)).AsTask();
        var patient = queue.GetAsync().AsTask();

        time.Advance(TimeSpan.FromSeconds(1));
        await timed.Invoking(t => t).Should().ThrowAsync<TimeoutException>();

        await queue.PutAsync(42);
        (await patient).Should().Be(42);
        // end doc
        queue.Count.Should().Be(0);
    });

    [Fact]
    public Task JoinExample_CompletesWhenEveryItemIsDone() => Bounded(async () =>
    {
        // doc: queues-join
        var queue = new AsyncQueue<int>();
        for (int i = 0; i < 5; i++)
        {
            await queue.PutAsync(i);
        }

        var join = queue.JoinAsync().AsTask();
        for (int i = 0; i < 5; i++)
        {
            queue.TryGet(out _).Should().BeTrue();
            queue.TaskDone();
        }

        await join;
        // end doc
        queue.UnfinishedTasks.Should().Be(0);
    });

    [Fact]
    public Task ShutdownExample_Immediate_DropsWhatIsLeft() => Bounded(async () =>
    {
        // doc: queues-shutdown
        var queue = new AsyncQueue<int>(maxSize: 3);
        for (int i = 0; i < 3; i++)
        {
            await queue.PutAsync(i);
        }

        var putter = queue.PutAsync(99).AsTask();
        var join = queue.JoinAsync().AsTask();

        queue.Shutdown(immediate: true);

        await join;                                                              // the dropped items count as done
        await putter.Invoking(t => t).Should().ThrowAsync<QueueShutDownException>();
        queue.Invoking(q => q.TryGet(out _)).Should().Throw<QueueShutDownException>();
        // end doc
        queue.Count.Should().Be(0);
    });

    [Theory]
    [InlineData(-1)] // every item is processed
    [InlineData(3)]  // item 3 fails
    public Task ProducerConsumerExample_ForeachEndsAtShutdown(int failing) => Bounded(async () =>
    {
        var processed = new List<int>();
        void Process(int item)
        {
            if (item == failing)
            {
                throw new FormatException($"item {item}");
            }

            processed.Add(item);
        }

        // doc: queues-foreach
        var queue = new AsyncQueue<int>(maxSize: 2);
        var failures = new List<Exception>();
        var consumer = Task.Run(async () =>
        {
            await foreach (int item in queue)   // ends when the queue is shut down and empty
            {
                try
                {
                    Process(item);
                }
                catch (Exception ex)
                {
                    failures.Add(ex);           // recorded: a consumer that died would leave the producer waiting
                }
                finally
                {
                    queue.TaskDone();           // done, failed or not: JoinAsync waits for every item
                }
            }
        });
        for (int i = 0; i < 10; i++)
        {
            await queue.PutAsync(i);            // waits while the queue is full
        }

        await queue.JoinAsync();                // every item processed
        queue.Shutdown();
        await consumer;
        // end doc
        processed.Should().Equal(Enumerable.Range(0, 10).Where(i => i != failing));
        failures.Should().HaveCount(failing < 0 ? 0 : 1);
    });

    [Fact]
    public Task ToStringExample_ShowsTheState() => Bounded(async () =>
    {
        var queue = new AsyncQueue<int>(maxSize: 10);
        for (int i = 0; i < 3; i++)
        {
            await queue.PutAsync(i);
        }

        var full = new AsyncQueue<int>(maxSize: 1);
        await full.PutAsync(1);
        full.Shutdown();
        var unbounded = new AsyncQueue<int>();
        var getter = unbounded.GetAsync().AsTask();

        // doc: queues-tostring
        queue.ToString().Should().Be("AsyncQueue(maxSize=10, count=3, getters=0, putters=0, unfinished=3)");
        full.ToString().Should().Be("AsyncQueue(maxSize=1, count=1, getters=0, putters=0, unfinished=1, shutdown)");
        unbounded.ToString().Should().Be("AsyncQueue(maxSize=unbounded, count=0, getters=1, putters=0, unfinished=0)");
        // end doc
        unbounded.Shutdown();
        await getter.Invoking(t => t).Should().ThrowAsync<QueueShutDownException>();
    });
}
