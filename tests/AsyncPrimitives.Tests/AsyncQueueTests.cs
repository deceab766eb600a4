namespace AsyncPrimitives.Tests;

public sealed class AsyncQueueTests : QueueContractTests
{
    protected override string QueueName => "AsyncQueue";

    protected override AsyncQueueBase<int> CreateQueue(int maxSize = 0, TimeProvider? timeProvider = null, string? name = null) =>
        new AsyncQueue<int>(maxSize, timeProvider) { Name = name };

    protected override AsyncQueueBase<int> CreateQueue(int maxSize, int resumeSize, TimeProvider? timeProvider = null) =>
        new AsyncQueue<int>(maxSize, timeProvider: timeProvider) { ResumeSize = resumeSize };

    [Fact]
    public async Task GetAsync_ReturnsItemsInFifoOrder()
    {
        var queue = new AsyncQueue<int>();
        foreach (int item in new[] { 1, 3, 2 })
        {
            await queue.PutAsync(item);
        }

        var got = new List<int>();
        while (queue.TryGet(out int item))
        {
            got.Add(item);
        }

        got.Should().Equal(1, 3, 2);
    }

    [Fact]
    public async Task GetAsync_WithPuttersWaiting_KeepsFifoOrder()
    {
        var queue = new AsyncQueue<int>(maxSize: 2);
        queue.TryPut(1).Should().BeTrue();
        queue.TryPut(2).Should().BeTrue();
        var putters = new[] { queue.PutAsync(3).AsTask(), queue.PutAsync(4).AsTask() };

        var got = new List<int>();
        for (int i = 0; i < 4; i++)
        {
            got.Add(await Bounded(queue.GetAsync()));
        }

        await Task.WhenAll(putters).WaitAsync(Bound);
        got.Should().Equal(1, 2, 3, 4);
    }

    [Fact]
    public async Task Example_ProducerConsumer_WithJoinAndShutdown()
    {
        // The canonical use shown in the XML docs and docs/primitives.queues.md.
        var processed = new List<int>();
        void Process(int item) => processed.Add(item);

        var queue = new AsyncQueue<int>(maxSize: 2);
        var consumer = Task.Run(async () =>
        {
            await foreach (int item in queue)   // ends when the queue is shut down and empty
            {
                Process(item);
                queue.TaskDone();
            }
        });
        for (int i = 0; i < 10; i++)
        {
            await queue.PutAsync(i);            // waits while the queue is full
        }

        await queue.JoinAsync();                // every item processed
        queue.Shutdown();
        await consumer.WaitAsync(Bound);

        processed.Should().Equal(Enumerable.Range(0, 10));
    }

    [Fact]
    public async Task Queue_OfReferenceTypes_DropsReferencesOnceTaken()
    {
        var queue = new AsyncQueue<object>(maxSize: 4);
        var weak = PutAndTakeObject(queue);
        await Task.Yield();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        weak.IsAlive.Should().BeFalse("the ring buffer clears the slot of a taken item");
    }

    private static WeakReference PutAndTakeObject(AsyncQueue<object> queue)
    {
        var item = new object();
        queue.TryPut(item).Should().BeTrue();
        queue.TryGet(out object? taken).Should().BeTrue();
        taken.Should().BeSameAs(item);
        return new WeakReference(item);
    }
}
