// Shared source, compiled into both libraries (they do not depend on each other): the one timeout rule they apply at
// the call. Shown in each library as its Shared/ folder.
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AsyncTools.Shared;

/// <summary>The one validator for every timeout argument of both libraries.</summary>
internal static class TimeoutArgument
{
    /// <summary>The longest finite timeout a .NET timer accepts (as for <c>Task.Delay</c>): 4294967294 ms, about 49.7 days.</summary>
    public const double MaxMilliseconds = uint.MaxValue - 1;

    /// <summary>
    /// Throws <see cref="ArgumentOutOfRangeException"/> unless <paramref name="timeout"/> is
    /// <see cref="Timeout.InfiniteTimeSpan"/> or between zero (exclusive when <paramref name="allowZero"/> is false) and
    /// <see cref="MaxMilliseconds"/>. A longer timeout would otherwise fail later, when the timer is created.
    /// </summary>
    public static void ThrowIfInvalid(TimeSpan timeout, [CallerArgumentExpression(nameof(timeout))] string? paramName = null, bool allowZero = true)
    {
        if (timeout != Timeout.InfiniteTimeSpan &&
            (timeout < TimeSpan.Zero || (!allowZero && timeout == TimeSpan.Zero) || timeout.TotalMilliseconds > MaxMilliseconds))
        {
            ThrowOutOfRange(timeout, paramName, allowZero);
        }
    }

    /// <summary>
    /// The part of <paramref name="timeout"/> (finite) left since <paramref name="startTimestamp"/>, between zero and
    /// <paramref name="timeout"/>: a clock whose timestamps step back (a provider built on wall-clock time) never
    /// lengthens a wait beyond the time it was given.
    /// </summary>
    public static TimeSpan Remaining(TimeSpan timeout, TimeProvider timeProvider, long startTimestamp)
    {
        TimeSpan elapsed = timeProvider.GetElapsedTime(startTimestamp);
        return elapsed <= TimeSpan.Zero ? timeout : elapsed >= timeout ? TimeSpan.Zero : timeout - elapsed;
    }

    /// <summary>As <see cref="ThrowIfInvalid(TimeSpan, string?, bool)"/>; <see langword="null"/> (no timeout) is valid.</summary>
    public static void ThrowIfInvalid(TimeSpan? timeout, [CallerArgumentExpression(nameof(timeout))] string? paramName = null, bool allowZero = true)
    {
        if (timeout is { } value)
        {
            ThrowIfInvalid(value, paramName, allowZero);
        }
    }

    [DoesNotReturn]
    private static void ThrowOutOfRange(TimeSpan timeout, string? paramName, bool allowZero) =>
        throw new ArgumentOutOfRangeException(paramName, timeout, allowZero
            ? "The timeout must be Timeout.InfiniteTimeSpan or between TimeSpan.Zero and 4294967294 milliseconds."
            : "The value must be Timeout.InfiniteTimeSpan or positive and at most 4294967294 milliseconds.");
}
