using System.Reflection;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives.Tests.Internal;

internal delegate void UnderLock(Engine engine, ref Completions<int> completions);

/// <summary>
/// A bare <see cref="WaitQueue{T}"/> with a recording owner. The queue's lock is the internal
/// <c>System.Threading.Lock</c> on net10.0 and the library's own polyfill of it on netstandard2.0, so the test
/// cannot name its type; it is taken through reflection.
/// </summary>
internal sealed class Engine : IWaitOwner<int>
{
    private readonly object _sync;
    private readonly MethodInfo _enter;
    private readonly MethodInfo _exit;

    public Engine()
    {
        Queue = new WaitQueue<int>(new(), Time, this);
        _sync = typeof(WaitQueue<int>).GetField("_sync", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(Queue)!;
        _enter = _sync.GetType().GetMethod("Enter", Type.EmptyTypes)!;
        _exit = _sync.GetType().GetMethod("Exit", Type.EmptyTypes)!;
    }

    public ManualTimeProvider Time { get; } = new();

    public WaitQueue<int> Queue { get; }

    /// <summary>How many times the queue told its owner that a waiter left.</summary>
    public int LeftCount { get; private set; }

    public Scope Hold()
    {
        _enter.Invoke(_sync, null);
        return new Scope(this);
    }

    public ValueTask<int> Wait(int payload, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        WaitNode<int> node;
        using (Hold())
        {
            node = Queue.Enqueue(payload);
        }

        return Queue.Arm(node, timeout ?? Timeout.InfiniteTimeSpan, cancellationToken);
    }

    /// <summary>Runs <paramref name="decide"/> under the lock, then completes what it decided outside it.</summary>
    public void Complete(UnderLock decide)
    {
        var completions = default(Completions<int>);
        using (Hold())
        {
            decide(this, ref completions);
        }

        completions.CompleteAll();
    }

    public void GrantAll(int result) => Complete((Engine e, ref Completions<int> c) => e.Queue.DrainWithResult(result, ref c));

    void IWaitOwner<int>.OnWaiterLeft(ref Completions<int> completions) => LeftCount++;

    public readonly struct Scope(Engine engine) : IDisposable
    {
        public void Dispose() => engine._exit.Invoke(engine._sync, null);
    }
}
