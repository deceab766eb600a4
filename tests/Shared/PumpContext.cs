using System.Collections.Concurrent;

namespace AsyncTools.Testing;

/// <summary>A single-threaded FIFO <see cref="SynchronizationContext"/>: what is posted to it waits in a queue until
/// <see cref="Run(Action)"/> runs it, on the thread that called <see cref="Run(Action)"/>. Posts may come from any
/// thread; <see cref="WaitForPostAsync"/> and <see cref="RunUntilAsync"/> wait for them.</summary>
internal sealed class PumpContext : SynchronizationContext
{
    private readonly ConcurrentQueue<(SendOrPostCallback Callback, object? State)> _posted = new();

    /// <summary>Released once per post.</summary>
    private readonly SemaphoreSlim _postCount = new(0);

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
                _postCount.Wait(0);
                item.Callback(item.State);
            }
        }
        finally
        {
            SetSynchronizationContext(previous);
        }
    }

    /// <summary>Waits (at most <paramref name="bound"/>) until something is posted, without running it.</summary>
    public async Task WaitForPostAsync(TimeSpan bound)
    {
        (await _postCount.WaitAsync(bound)).Should().BeTrue("a post was expected");
        _postCount.Release(); // still queued: counted until it runs
    }

    /// <summary>Runs what is posted, as it comes, until <paramref name="task"/> has completed (each wait for a post
    /// bounded by <paramref name="bound"/>).</summary>
    public async Task RunUntilAsync(Task task, TimeSpan bound)
    {
        while (!task.IsCompleted)
        {
            Task<bool> posted = _postCount.WaitAsync(bound);
            if (await Task.WhenAny(task, posted) == task)
            {
                return;
            }

            (await posted).Should().BeTrue("a post, or the end of the task, was expected");
            _postCount.Release(); // Run takes it back as it runs the post
            Run(() => { });
        }
    }

    public override void Post(SendOrPostCallback d, object? state)
    {
        _posted.Enqueue((d, state));
        _postCount.Release();
    }

    public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException("Nothing here sends to a context.");

    public override SynchronizationContext CreateCopy() => this;
}
