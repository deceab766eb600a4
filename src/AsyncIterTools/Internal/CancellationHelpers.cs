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

    /// <summary>
    /// Whether <paramref name="failure"/> is a source's clean-up giving way to the cancellation of the token the operator
    /// gave it (<paramref name="token"/>, cancelled because the operator stopped early or the caller cancelled): any
    /// <see cref="OperationCanceledException"/> once that token is cancelled, since the source may watch a token linked
    /// to it (an async iterator called with a token of its own gets one) and cannot be told apart from it. Not a failure.
    /// </summary>
    public static bool IsGivingWayTo(this Exception failure, CancellationToken token) =>
        failure is OperationCanceledException && token.IsCancellationRequested;
}
