// The one timeout rule both libraries apply at the call. Linked into each library as Polyfills/TimeoutArgument.cs
// (shared source, like Compat.cs): the packages do not depend on each other, so this is how they share it.
using System.Diagnostics.CodeAnalysis;

namespace AsyncTools.Polyfills;

internal static class TimeoutArgument
{
    /// <summary>The longest finite timeout a .NET timer accepts (as for <c>Task.Delay</c>): 4294967294 ms, about 49.7 days.</summary>
    public const double MaxMilliseconds = uint.MaxValue - 1;

    /// <summary>
    /// Throws unless <paramref name="timeout"/> is <see cref="Timeout.InfiniteTimeSpan"/> or between zero (exclusive
    /// when <paramref name="allowZero"/> is false) and <see cref="MaxMilliseconds"/>. A longer timeout would otherwise
    /// fail later, when the timer is created.
    /// </summary>
    public static void ThrowIfInvalid(TimeSpan timeout, string paramName, bool allowZero = true)
    {
        if (timeout != Timeout.InfiniteTimeSpan &&
            (timeout < TimeSpan.Zero || (!allowZero && timeout == TimeSpan.Zero) || timeout.TotalMilliseconds > MaxMilliseconds))
        {
            ThrowOutOfRange(timeout, paramName, allowZero);
        }
    }

    [DoesNotReturn]
    private static void ThrowOutOfRange(TimeSpan timeout, string paramName, bool allowZero) =>
        throw new ArgumentOutOfRangeException(paramName, timeout, allowZero
            ? "The timeout must be Timeout.InfiniteTimeSpan or between TimeSpan.Zero and 4294967294 milliseconds."
            : "The value must be Timeout.InfiniteTimeSpan or positive and at most 4294967294 milliseconds.");
}
