using System.Diagnostics.CodeAnalysis;

namespace AsyncPrimitives.Internal;

/// <summary>Throws for our own failure cases; argument checks use the BCL throw helpers.</summary>
internal static class ThrowHelper
{
    public static TimeoutException TimeoutNow() => new("The wait timed out.");

    [DoesNotReturn]
    public static void ThrowInvalidOperation_ValueTaskMisuse() =>
        throw new InvalidOperationException(
            "The operation's result was requested before it completed, or more than once. Await each ValueTask exactly once.");

    [DoesNotReturn]
    public static void ThrowSynchronizationLock_NotHeld() =>
        throw new SynchronizationLockException("The lock is not held.");

    [DoesNotReturn]
    public static void ThrowSemaphoreFull() =>
        throw new SemaphoreFullException("Adding the specified count to the semaphore would cause it to exceed its maximum count.");

    [DoesNotReturn]
    public static void ThrowObjectDisposed(string objectName) => throw new ObjectDisposedException(objectName);
}
