// Small shims over APIs whose best form differs between net10.0 and netstandard2.0.
// Linked into each library as Polyfills/Compat.cs; callers use these and contain no #if.
namespace AsyncTools.Polyfills;

internal static class Compat
{
    /// <summary>
    /// Registers a cancellation callback without capturing the ExecutionContext (UnsafeRegister on net10.0; on
    /// netstandard2.0, Register with the flow suppressed, which copies the context when it holds AsyncLocal values): the
    /// callback runs in the canceller's context, never in the registrant's.
    /// </summary>
    public static CancellationTokenRegistration RegisterNoFlow(this CancellationToken token, Action<object?> callback, object? state)
    {
#if NETSTANDARD2_0
        if (ExecutionContext.IsFlowSuppressed())
        {
            return token.Register(callback, state, useSynchronizationContext: false);
        }

        using (ExecutionContext.SuppressFlow())
        {
            return token.Register(callback, state, useSynchronizationContext: false);
        }
#else
        return token.UnsafeRegister(callback, state);
#endif
    }

    /// <summary>
    /// Queues <paramref name="callback"/> to the thread pool without flowing the ExecutionContext. With
    /// <paramref name="preferLocal"/>, to the current thread's local queue, as the BCL queues an awaiter's continuation;
    /// without, to the global queue, so that work already queued on the current thread runs first (a hand-off that lets
    /// completions accumulate). netstandard2.0 has only the global queue.
    /// </summary>
    public static void UnsafeQueue(Action<object?> callback, object? state, bool preferLocal)
    {
#if NETSTANDARD2_0
        ThreadPool.UnsafeQueueUserWorkItem(new WaitCallback(callback.Invoke), state);
#else
        ThreadPool.UnsafeQueueUserWorkItem(callback, state, preferLocal);
#endif
    }

    /// <summary>
    /// Queues <paramref name="item"/> to the thread pool's global queue (see the overload above) without flowing the
    /// ExecutionContext and, on net10.0, without allocating: the pool queues the item itself.
    /// </summary>
    public static void UnsafeQueue(IThreadPoolWorkItem item)
    {
#if NETSTANDARD2_0
        ThreadPool.UnsafeQueueUserWorkItem(static s => ((IThreadPoolWorkItem)s!).Execute(), item);
#else
        ThreadPool.UnsafeQueueUserWorkItem(item, preferLocal: false);
#endif
    }

    /// <summary>A task that completes after <paramref name="delay"/> on <paramref name="timeProvider"/>'s clock, or is cancelled first.</summary>
    public static Task Delay(TimeProvider timeProvider, TimeSpan delay, CancellationToken cancellationToken)
    {
#if NETSTANDARD2_0
        return timeProvider.Delay(delay, cancellationToken);
#else
        return Task.Delay(delay, timeProvider, cancellationToken);
#endif
    }
}

#if NETSTANDARD2_0
/// <summary>Task members that net10.0 has and netstandard2.0 lacks, as C# 14 extension members.</summary>
internal static class TaskPolyfills
{
    extension(Task task)
    {
        /// <summary>
        /// A task that completes like <paramref name="task"/>, or is cancelled when <paramref name="cancellationToken"/>
        /// is cancelled first (the waited-for task keeps running). Mirrors <c>Task.WaitAsync(CancellationToken)</c>.
        /// </summary>
        public Task WaitAsync(CancellationToken cancellationToken)
        {
            if (task.IsCompleted || !cancellationToken.CanBeCanceled)
            {
                return task;
            }

            if (cancellationToken.IsCancellationRequested)
            {
                return Task.FromCanceled(cancellationToken);
            }

            var promise = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            CancellationTokenRegistration registration = cancellationToken.Register(
                static s =>
                {
                    var (p, token) = ((TaskCompletionSource<bool>, CancellationToken))s!;
                    p.TrySetCanceled(token);
                },
                (promise, cancellationToken));
            _ = task.ContinueWith(
                static (t, s) =>
                {
                    var (p, reg) = ((TaskCompletionSource<bool>, CancellationTokenRegistration))s!;
                    reg.Dispose();
                    if (t.IsFaulted)
                    {
                        p.TrySetException(t.Exception!.InnerExceptions);
                    }
                    else if (t.IsCanceled)
                    {
                        p.TrySetCanceled();
                    }
                    else
                    {
                        p.TrySetResult(true);
                    }
                },
                (promise, registration),
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
            return promise.Task;
        }
    }
}
#endif
