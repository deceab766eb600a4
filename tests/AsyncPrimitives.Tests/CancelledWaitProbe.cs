using System.Runtime.CompilerServices;

namespace AsyncPrimitives.Tests;

/// <summary>
/// Cancels one wait and observes its <see cref="OperationCanceledException"/> deterministically, on the calling thread
/// and with no async state machine, so that a weak reference to the token source measures only what the primitive
/// keeps: nothing else (a pool thread's last thrown exception, a hoisted local) holds the exception, which holds the
/// token, which holds its source.
/// </summary>
public static class CancelledWaitProbe
{
    /// <summary>Starts a wait with a fresh token source, cancels it (the registration runs inline, so the wait is
    /// cancelled when Cancel returns), observes the failure, disposes the source and returns a weak reference to it.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static WeakReference CancelOneObservedWait<T>(Func<CancellationToken, ValueTask<T>> wait) =>
        CancelAndObserve(wait, static pending => pending.IsCompleted, static pending => pending.GetAwaiter().GetResult());

    /// <summary>The same, for a wait with no result (an event's wait, a queue's put or join).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static WeakReference CancelOneObservedWait(Func<CancellationToken, ValueTask> wait) =>
        CancelAndObserve(wait, static pending => pending.IsCompleted, static pending => pending.GetAwaiter().GetResult());

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference CancelAndObserve<TPending>(
        Func<CancellationToken, TPending> wait, Func<TPending, bool> isCompleted, Action<TPending> getResult)
    {
        var cts = new CancellationTokenSource();
        TPending pending = wait(cts.Token);
        if (isCompleted(pending))
        {
            throw new InvalidOperationException("The wait did not wait.");
        }

        cts.Cancel();
        if (!isCompleted(pending))
        {
            throw new InvalidOperationException("Cancel should have completed the wait inline.");
        }

        try
        {
            getResult(pending);
            throw new InvalidOperationException("A cancelled wait succeeded.");
        }
        catch (OperationCanceledException)
        {
        }

        cts.Dispose();
        return new WeakReference(cts);
    }

    /// <summary>Full collection, after replacing this thread's last thrown exception with one that holds nothing.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Collect()
    {
        try
        {
            throw new InvalidOperationException("replaces the thread's last thrown exception");
        }
        catch (InvalidOperationException)
        {
        }

        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }
}
