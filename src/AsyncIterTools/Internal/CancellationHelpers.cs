namespace AsyncIterTools.Internal;

/// <summary>Cancellation helpers shared by the concurrent operators.</summary>
internal static class CancellationHelpers
{
    /// <summary>
    /// Cancels <paramref name="source"/>, swallowing exceptions thrown by callbacks that user code registered on its
    /// token: the operator is shutting down and must go on to await its work; the work reports its own outcome.
    /// </summary>
    public static void CancelQuietly(this CancellationTokenSource source)
    {
        try
        {
            source.Cancel();
        }
        catch (AggregateException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }
}
