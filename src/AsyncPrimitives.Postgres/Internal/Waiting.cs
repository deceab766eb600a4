namespace AsyncPrimitives.Postgres.Internal;

/// <summary>The one way a wait sleeps between two calls to the server.</summary>
internal static class Waiting
{
    /// <summary>
    /// Sleeps until <paramref name="woken"/> completes (a signal of the wait's key), <paramref name="sleep"/> passes
    /// (the poll interval, or what is left of the timeout), <paramref name="cancellationToken"/> is cancelled
    /// (<see cref="OperationCanceledException"/>), or the session ends (the session's end exception).
    /// </summary>
    public static async Task WaitForTurnAsync(Task woken, TimeSpan sleep, Session session, TimeProvider time, CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, session.Ended);
        try
        {
            await woken.WaitAsync(sleep, time, linked.Token).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // The poll interval passed: ask the server again.
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw session.CreateEndException();
        }
    }
}
