namespace AsyncPrimitives.Tests.Support;

/// <summary>A <see cref="SynchronizationContext"/> that runs posted work on the thread pool with itself as the
/// current context, counting posts: shows whether a continuation was posted to the context it captured.</summary>
internal sealed class CountingContext : SynchronizationContext
{
    private int _posts;

    public int Posts => Volatile.Read(ref _posts);

    public override void Post(SendOrPostCallback d, object? state)
    {
        Interlocked.Increment(ref _posts);
        ThreadPool.QueueUserWorkItem(_ =>
        {
            SetSynchronizationContext(this);
            try
            {
                d(state);
            }
            finally
            {
                SetSynchronizationContext(null);
            }
        });
    }
}
