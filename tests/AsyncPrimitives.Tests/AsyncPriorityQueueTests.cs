namespace AsyncPrimitives.Tests;

public sealed class AsyncPriorityQueueTests : QueueContractTests
{
    protected override string QueueName => "AsyncPriorityQueue";

    protected override AsyncQueueBase<int> CreateQueue(int maxSize = 0, TimeProvider? timeProvider = null, string? name = null) =>
        new AsyncPriorityQueue<int>(maxSize, timeProvider: timeProvider) { Name = name };

    protected override AsyncQueueBase<int> CreateQueue(int maxSize, int resumeSize, TimeProvider? timeProvider = null) =>
        new AsyncPriorityQueue<int>(maxSize, timeProvider: timeProvider) { ResumeSize = resumeSize };

    [Fact]
    public async Task GetAsync_ReturnsTheSmallestItemFirst()
    {
        var queue = new AsyncPriorityQueue<int>();
        foreach (int item in new[] { 1, 3, 2, 0 })
        {
            await queue.PutAsync(item);
        }

        var got = new List<int>();
        while (queue.TryGet(out int item))
        {
            got.Add(item);
        }

        got.Should().Equal(0, 1, 2, 3);
    }

    [Fact]
    public async Task GetAsync_WithTuples_OrdersByPriorityThenInsertion()
    {
        // doc: queues-priority
        var queue = new AsyncPriorityQueue<(int Priority, string Name)>();
        await queue.PutAsync((1, "medium"));
        await queue.PutAsync((0, "high"));
        await queue.PutAsync((10, "low"));

        (await queue.GetAsync()).Should().Be((0, "high"));
        (await queue.GetAsync()).Should().Be((1, "medium"));
        (await queue.GetAsync()).Should().Be((10, "low"));
        // end doc
    }

    [Fact]
    public void GetAsync_WithEqualPriorities_KeepsInsertionOrder()
    {
        var byPriority = Comparer<(int Priority, string Name)>.Create((a, b) => a.Priority.CompareTo(b.Priority));
        var queue = new AsyncPriorityQueue<(int Priority, string Name)>(comparer: byPriority);
        string[] names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        for (int i = 0; i < names.Length; i++)
        {
            queue.TryPut((i % 2, names[i])).Should().BeTrue();
        }

        var got = new List<string>();
        while (queue.TryGet(out var item))
        {
            got.Add(item.Name);
        }

        got.Should().Equal("a", "c", "e", "g", "b", "d", "f", "h");
    }

    [Fact]
    public void Heap_MatchesAStableSortOracle()
    {
        var rng = new Random(7);
        var byKey = Comparer<(int Key, int Seq)>.Create((a, b) => a.Key.CompareTo(b.Key));
        var queue = new AsyncPriorityQueue<(int Key, int Seq)>(comparer: byKey);
        var oracle = new List<(int Key, int Seq)>();
        var got = new List<(int Key, int Seq)>();
        var expected = new List<(int Key, int Seq)>();
        for (int step = 0; step < 5000; step++)
        {
            if (rng.Next(3) != 0 || oracle.Count == 0)
            {
                var item = (rng.Next(20), step);
                queue.TryPut(item).Should().BeTrue();
                oracle.Add(item);
            }
            else
            {
                var next = oracle.OrderBy(x => x.Key).ThenBy(x => x.Seq).First();
                oracle.Remove(next);
                expected.Add(next);
                queue.TryGet(out var taken).Should().BeTrue();
                got.Add(taken);
            }
        }

        got.Should().Equal(expected);
        queue.Count.Should().Be(oracle.Count);
    }

    [Fact]
    public void Comparer_OrdersTheItems_AndDefaultsToComparerDefault()
    {
        new AsyncPriorityQueue<int>().Comparer.Should().BeSameAs(Comparer<int>.Default);
        var descending = Comparer<int>.Create((a, b) => b.CompareTo(a));
        var queue = new AsyncPriorityQueue<int>(comparer: descending);
        queue.Comparer.Should().BeSameAs(descending);
        foreach (int item in new[] { 2, 5, 1 })
        {
            queue.TryPut(item).Should().BeTrue();
        }

        queue.TryGet(out int first).Should().BeTrue();
        first.Should().Be(5);
    }

    [Fact]
    public async Task GetAsync_WithPuttersWaiting_OrdersThePutterItemWithTheRest()
    {
        var queue = new AsyncPriorityQueue<int>(maxSize: 2);
        queue.TryPut(5).Should().BeTrue();
        queue.TryPut(3).Should().BeTrue();
        var putter = queue.PutAsync(1).AsTask();

        (await Bounded(queue.GetAsync())).Should().Be(1, "the waiting putter's item moved in before the get took the smallest");
        await putter.WaitAsync(Bound);
        queue.TryGet(out int second).Should().BeTrue();
        second.Should().Be(3);
    }

    [Fact]
    public async Task Comparer_ThatThrows_LeavesTheQueueUnchanged()
    {
        bool fail = false;
        var flaky = Comparer<int>.Create((a, b) => fail ? throw new InvalidOperationException("boom") : a.CompareTo(b));
        var queue = new AsyncPriorityQueue<int>(maxSize: 3, comparer: flaky);
        foreach (int item in new[] { 4, 2, 6 })
        {
            queue.TryPut(item).Should().BeTrue();
        }

        var putter = queue.PutAsync(1).AsTask();
        fail = true;
        queue.Invoking(q => q.TryGet(out _)).Should().Throw<InvalidOperationException>().WithMessage("boom");
        queue.Invoking(q => q.GetAsync()).Should().Throw<InvalidOperationException>().WithMessage("boom");
        putter.IsCompleted.Should().BeFalse("the putter's item could not move in, so it still waits");
        queue.Count.Should().Be(3);
        queue.UnfinishedTasks.Should().Be(3);

        fail = false;
        var got = new List<int>();
        for (int i = 0; i < 4; i++)
        {
            got.Add(await Bounded(queue.GetAsync()));
        }

        await putter.WaitAsync(Bound);
        got.Should().Equal(1, 2, 4, 6);
    }

    [Fact]
    public async Task Comparer_ThatThrowsInTheTake_AfterAPuttersItemMovedIn_LeavesTheQueueUnchanged()
    {
        // Full at {1, 2} with a putter of 3 waiting: a get moves 3 in, then takes 1, whose sift-down compares 2 with 3.
        bool fail = false;
        var flaky = Comparer<int>.Create((a, b) => fail && a + b == 5 ? throw new InvalidOperationException("boom") : a.CompareTo(b));
        var queue = new AsyncPriorityQueue<int>(maxSize: 2, comparer: flaky);
        queue.TryPut(1).Should().BeTrue();
        queue.TryPut(2).Should().BeTrue();
        var putter = queue.PutAsync(3).AsTask();

        fail = true;
        queue.Invoking(q => q.TryGet(out _)).Should().Throw<InvalidOperationException>().WithMessage("boom");
        queue.Count.Should().Be(2, "the item moved in went out again");
        queue.UnfinishedTasks.Should().Be(2);
        putter.IsCompleted.Should().BeFalse("a putter is served only by a take that succeeded");
        queue.TryPut(4).Should().BeFalse("the queue is still full");

        fail = false;
        var got = new List<int>();
        for (int i = 0; i < 3; i++)
        {
            got.Add(await Bounded(queue.GetAsync()));
        }

        await putter.WaitAsync(Bound);
        got.Should().Equal(1, 2, 3);
    }

    [Fact]
    public async Task Comparer_ThatThrowsMovingInALaterPutter_TakesTheEarlierOnesOutAgain()
    {
        // ResumeSize 0: the get that leaves the queue empty first moves in every waiting putter that fits (1, 2, 7);
        // moving in 7 throws, after 1 and 2 went in.
        bool fail = false;
        var flaky = Comparer<int>.Create((a, b) => fail && (a == 7 || b == 7) ? throw new InvalidOperationException("boom") : a.CompareTo(b));
        var queue = new AsyncPriorityQueue<int>(maxSize: 3, comparer: flaky) { ResumeSize = 0 };
        foreach (int item in new[] { 10, 20, 30 })
        {
            queue.TryPut(item).Should().BeTrue();
        }

        Task[] putters = [queue.PutAsync(1).AsTask(), queue.PutAsync(2).AsTask(), queue.PutAsync(7).AsTask()];
        queue.TryGet(out int taken).Should().BeTrue();
        taken.Should().Be(10);
        queue.TryGet(out taken).Should().BeTrue();
        taken.Should().Be(20);

        fail = true;
        queue.Invoking(q => q.TryGet(out _)).Should().Throw<InvalidOperationException>().WithMessage("boom");
        queue.Count.Should().Be(1);
        queue.UnfinishedTasks.Should().Be(3);
        putters.Should().OnlyContain(p => !p.IsCompleted, "no putter is served by a take that failed");

        fail = false;
        var got = new List<int>();
        for (int i = 0; i < 4; i++)
        {
            got.Add(await Bounded(queue.GetAsync()));
        }

        await Task.WhenAll(putters).WaitAsync(Bound);
        got.Should().Equal(1, 2, 7, 30);
    }
}
