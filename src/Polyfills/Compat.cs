// Small shims over APIs whose best form differs between net10.0 and netstandard2.0.
// Linked into each library as Polyfills/Compat.cs; callers use these and contain no #if.
namespace AsyncTools.Polyfills;

internal static class Compat
{
    /// <summary>
    /// Registers a cancellation callback without capturing the ExecutionContext where the platform allows
    /// (UnsafeRegister on net10.0), so a registration allocates as little as possible.
    /// </summary>
    public static CancellationTokenRegistration RegisterNoFlow(this CancellationToken token, Action<object?> callback, object? state)
    {
#if NETSTANDARD2_0
        return token.Register(callback, state, useSynchronizationContext: false);
#else
        return token.UnsafeRegister(callback, state);
#endif
    }

    /// <summary>Queues <paramref name="callback"/> to the thread pool without flowing the ExecutionContext.</summary>
    public static void QueueNoFlow(Action<object?> callback, object? state)
    {
#if NETSTANDARD2_0
        ThreadPool.UnsafeQueueUserWorkItem(s => callback(s), state);
#else
        ThreadPool.UnsafeQueueUserWorkItem(callback, state, preferLocal: false);
#endif
    }
}
