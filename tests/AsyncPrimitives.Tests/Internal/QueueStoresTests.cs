using System.Runtime.CompilerServices;

namespace AsyncPrimitives.Tests.Internal;

/// <summary>
/// The queue stores (<see cref="AsyncPrimitives.Internal.QueueStore{T}"/>), through the queues: the FIFO ring buffer
/// keeps its order when it grows while wrapped around, and no store keeps a reference to an item it gave up.
/// </summary>
public sealed class QueueStoresTests
{
    [Fact]
    public async Task FifoStore_GrowingWhileWrapped_KeepsTheOrder()
    {
        var queue = new AsyncQueue<int>();
        int next = 0;
        int expected = 0;
        for (int i = 0; i < 10; i++)
        {
            await queue.PutAsync(next++);
        }

        for (int i = 0; i < 7; i++)
        {
            (await queue.GetAsync()).Should().Be(expected++);
        }

        for (int i = 0; i < 40; i++)
        {
            await queue.PutAsync(next++); // wraps around the first array, then grows it twice
        }

        while (queue.TryGet(out int item))
        {
            item.Should().Be(expected++);
        }

        expected.Should().Be(next);
    }

    [Theory]
    [InlineData("fifo")]
    [InlineData("lifo")]
    [InlineData("priority")]
    public void Clear_ByShutdownImmediate_DropsTheReferencesToTheItems(string ordering)
    {
        AsyncQueueBase<object> queue = ordering switch
        {
            "fifo" => new AsyncQueue<object>(),
            "lifo" => new AsyncLifoQueue<object>(),
            _ => new AsyncPriorityQueue<object>(comparer: Comparer<object>.Create((a, b) => a.GetHashCode().CompareTo(b.GetHashCode()))),
        };
        List<WeakReference> items = PutItems(queue, 5);
        queue.Shutdown(immediate: true);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        items.Should().OnlyContain(w => !w.IsAlive, "the queue keeps no reference to dropped items");
        GC.KeepAlive(queue);
    }

    [Theory]
    [InlineData("fifo")]
    [InlineData("lifo")]
    [InlineData("priority")]
    public void Take_OfTheLastItem_DropsTheStoresReferenceToIt(string ordering)
    {
        AsyncQueueBase<object> queue = ordering switch
        {
            "fifo" => new AsyncQueue<object>(),
            "lifo" => new AsyncLifoQueue<object>(),
            _ => new AsyncPriorityQueue<object>(comparer: Comparer<object>.Create((a, b) => a.GetHashCode().CompareTo(b.GetHashCode()))),
        };
        WeakReference item = PutAndTakeOne(queue);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        item.IsAlive.Should().BeFalse();
        GC.KeepAlive(queue);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static List<WeakReference> PutItems(AsyncQueueBase<object> queue, int count)
    {
        var refs = new List<WeakReference>();
        for (int i = 0; i < count; i++)
        {
            var item = new object();
            queue.TryPut(item).Should().BeTrue();
            refs.Add(new WeakReference(item));
        }

        return refs;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference PutAndTakeOne(AsyncQueueBase<object> queue)
    {
        var item = new object();
        queue.TryPut(item).Should().BeTrue();
        queue.TryGet(out object? taken).Should().BeTrue();
        taken.Should().BeSameAs(item);
        return new WeakReference(item);
    }
}
