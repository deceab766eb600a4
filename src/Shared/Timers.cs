// Shared source, compiled into every library (they do not depend on each other): how a time provider's timer is let go.
namespace AsyncTools.Shared;

/// <summary>The one rule for stopping a time provider's timer (user code, like the provider).</summary>
internal static class Timers
{
    /// <summary>Disposes <paramref name="timer"/>, ignoring a failure: what it bounded (a wait, a batch) is decided by
    /// then, and must not be lost to a timer that fails to stop (docs/primitives.md, "Time is injectable").</summary>
    public static void DisposeQuietly(this ITimer timer)
    {
        try
        {
            timer.Dispose();
        }
#pragma warning disable CA1031 // see above: the outcome counts, not the timer's failure
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }
}
