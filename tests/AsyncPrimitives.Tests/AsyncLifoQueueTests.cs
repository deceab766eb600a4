namespace AsyncPrimitives.Tests;

public sealed class AsyncLifoQueueTests : QueueContractTests
{
    protected override string QueueName => "AsyncLifoQueue";

    protected override AsyncQueueBase<int> CreateQueue(int maxSize = 0, TimeProvider? timeProvider = null, string? name = null) =>
        new AsyncLifoQueue<int>(maxSize, timeProvider) { Name = name };

    protected override AsyncQueueBase<int> CreateQueue(int maxSize, int resumeSize, TimeProvider? timeProvider = null) =>
        new AsyncLifoQueue<int>(maxSize, timeProvider: timeProvider) { ResumeSize = resumeSize };

    [Fact]
    public async Task GetAsync_ReturnsTheNewestItemFirst()
    {
        var queue = new AsyncLifoQueue<int>();
        foreach (int item in new[] { 1, 3, 2 })
        {
            await queue.PutAsync(item);
        }

        var got = new List<int>();
        while (queue.TryGet(out int item))
        {
            got.Add(item);
        }

        got.Should().Equal(2, 3, 1);
    }

    [Fact]
    public async Task GetAsync_WithPuttersWaiting_MovesThePutterItemInFirst()
    {
        // Toro's LIFO order test: full at [1, 0] (0 pushed last), puts of 3 then 2 waiting.
        var queue = new AsyncLifoQueue<int>(maxSize: 2);
        queue.TryPut(1).Should().BeTrue();
        queue.TryPut(0).Should().BeTrue();
        queue.IsFull.Should().BeTrue();
        var put3 = queue.PutAsync(3).AsTask();
        var put2 = queue.PutAsync(2).AsTask();

        queue.TryGet(out int first).Should().BeTrue();
        first.Should().Be(3);
        (await Bounded(queue.GetAsync())).Should().Be(2);
        queue.TryGet(out int third).Should().BeTrue();
        third.Should().Be(0);
        (await Bounded(queue.GetAsync())).Should().Be(1);

        queue.IsEmpty.Should().BeTrue();
        await Task.WhenAll(put3, put2).WaitAsync(Bound);
        queue.UnfinishedTasks.Should().Be(4);
    }
}
