using System.Collections.Concurrent;

namespace AsyncTools.StressTests;

/// <summary>A single-threaded FIFO <see cref="SynchronizationContext"/>: what is posted to it waits in a queue until
/// <see cref="Run(Action)"/> runs it, on the thread that called <see cref="Run(Action)"/>.</summary>
internal sealed class PumpContext : SynchronizationContext
{
    private readonly ConcurrentQueue<(SendOrPostCallback Callback, object? State)> _posted = new();

    /// <summary>Runs <paramref name="start"/> as <see cref="Run(Action)"/> does, and returns its result.</summary>
    public T Run<T>(Func<T> start)
    {
        T result = default!;
        Run(() => { result = start(); });
        return result;
    }

    /// <summary>Runs <paramref name="start"/> with this context current (so its awaits capture it), then everything
    /// posted, in order, until the queue is empty.</summary>
    public void Run(Action start)
    {
        SynchronizationContext? previous = Current;
        SetSynchronizationContext(this);
        try
        {
            start();
            while (_posted.TryDequeue(out (SendOrPostCallback Callback, object? State) item))
            {
                item.Callback(item.State);
            }
        }
        finally
        {
            SetSynchronizationContext(previous);
        }
    }

    public override void Post(SendOrPostCallback d, object? state) => _posted.Enqueue((d, state));

    public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException("Nothing here sends to a context.");

    public override SynchronizationContext CreateCopy() => this;
}
