// Shared source, compiled into every library (they do not depend on each other): how a library's own token source is
// cancelled.
namespace AsyncTools.Shared;

/// <summary>The one rule for cancelling a token source of the library's own on which user code may have registered.</summary>
internal static class Cancellation
{
    /// <summary>
    /// Cancels <paramref name="source"/>, ignoring what the callbacks registered on its token throw (user code: a
    /// callback of the user's, or a time provider's timer that fails to stop as a delay registered there ends): every
    /// callback still runs, and the caller goes on to what it was doing (an operator to await its work, a session to end);
    /// each callback's owner reports its own outcome.
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
