using System.Runtime.CompilerServices;
using AsyncPrimitives.Internal;

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

    [Theory]
    [InlineData("fifo")]
    [InlineData("lifo")]
    [InlineData("priority")]
    public void UndoAdd_LeavesTheStoreAsBeforeTheAdd(string ordering)
    {
        // A get whose take fails (a priority comparer throwing) undoes the putters' items it moved in first: whatever the
        // store held, an add and its undo leave the same items, to be taken in the same order, with the same tie-breaks.
        var random = new Random(7);
        for (int round = 0; round < 200; round++)
        {
            int[] items = [.. Enumerable.Range(0, random.Next(0, 40)).Select(_ => random.Next(0, 10))];
            int taken = items.Length == 0 ? 0 : random.Next(0, items.Length);
            int[] added = [.. Enumerable.Range(0, random.Next(1, 4)).Select(_ => random.Next(0, 10))];
            QueueStore<(int Value, int Id)> undone = Filled(ordering, items, taken);
            foreach ((int value, int i) in added.Select((v, i) => (v, i)))
            {
                undone.Add((value, -1 - i));
            }

            for (int i = 0; i < added.Length; i++)
            {
                undone.UndoAdd();
            }

            undone.Add((10, 1_000)); // after the undo, ties still break by arrival
            QueueStore<(int Value, int Id)> untouched = Filled(ordering, items, taken);
            untouched.Add((10, 1_000));
            Drain(undone).Should().Equal(Drain(untouched), "round {0}", round);
        }
    }

    private static QueueStore<(int Value, int Id)> Filled(string ordering, int[] items, int taken)
    {
        QueueStore<(int Value, int Id)> store = ordering switch
        {
            "fifo" => new FifoStore<(int, int)>(0),
            "lifo" => new LifoStore<(int, int)>(0),
            _ => new PriorityStore<(int Value, int Id)>(0, Comparer<(int Value, int Id)>.Create((a, b) => a.Value.CompareTo(b.Value))),
        };
        for (int i = 0; i < items.Length; i++)
        {
            store.Add((items[i], i));
        }

        for (int i = 0; i < taken; i++)
        {
            store.Take(); // the FIFO ring starts elsewhere than at 0
        }

        return store;
    }

    private static List<(int Value, int Id)> Drain(QueueStore<(int Value, int Id)> store)
    {
        var drained = new List<(int Value, int Id)>();
        while (store.Count > 0)
        {
            drained.Add(store.Take());
        }

        return drained;
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
