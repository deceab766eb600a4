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
    /// gave it (<paramref name="token"/>, cancelled because the operator stopped early or the caller cancelled): not a
    /// failure of the source. An <see cref="OperationCanceledException"/> of any other token (a timeout of its own) is one.
    /// </summary>
    public static bool IsCancellationOf(this Exception failure, CancellationToken token) =>
        failure is OperationCanceledException cancelled && token.IsCancellationRequested && cancelled.CancellationToken == token;
}
