using System.Diagnostics;
using System.Runtime.CompilerServices;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A counting semaphore for asynchronous code with an optional upper bound (Toro's <c>Semaphore</c> and
/// <c>BoundedSemaphore</c>, <c>tornado.locks.BoundedSemaphore</c>).
/// </summary>
/// <remarks>
/// <para><b>Fairness.</b> Waiters acquire strictly in arrival order; while anyone waits, <see cref="TryAcquire"/>
/// fails and a released permit goes to the oldest waiter.</para>
/// <para><b>Cancellation and timeouts.</b> A token that is already cancelled fails the call at once. A timed-out
/// wait throws <see cref="TimeoutException"/>, a cancelled one <see cref="OperationCanceledException"/>; the waiter
/// leaves holding no permit. When a permit is handed over just as the waiter's token is cancelled, exactly one
/// wins: the wait returns the permit, or it throws and the permit goes to the next waiter. Permits are conserved.</para>
/// <para><b>Continuations.</b> <see cref="Release(int)"/> never runs a waiter's continuation inline. Uncontended
/// acquire and release are one compare-and-swap each and allocate nothing.</para>
/// </remarks>
/// <example>
/// <code>
/// var limit = new AsyncSemaphore(initialCount: 8);
/// using (await limit.AcquireAsync(cancellationToken))
/// {
///     await CallServiceAsync(cancellationToken); // at most 8 at a time
/// }
/// </code>
/// </example>
[DebuggerDisplay("Name = {Name}, CurrentCount = {CurrentCount}, MaxCount = {MaxCount}, Waiters = {_permits.WaiterCount}")]
public sealed class AsyncSemaphore
{
    private readonly PermitPool<Releaser> _permits;

    /// <summary>Creates a semaphore.</summary>
    /// <param name="initialCount">Permits available at the start.</param>
    /// <param name="maxCount">The most permits there can be; <see cref="Release(int)"/> past it throws
    /// <see cref="SemaphoreFullException"/>. <see cref="int.MaxValue"/> (the default) means unbounded in practice.</param>
    /// <param name="timeProvider">The clock for timeouts; <see cref="TimeProvider.System"/> when null.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="initialCount"/> is negative or greater than
    /// <paramref name="maxCount"/>, or <paramref name="maxCount"/> is not positive.</exception>
    public AsyncSemaphore(int initialCount, int maxCount = int.MaxValue, TimeProvider? timeProvider = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxCount);
        ArgumentOutOfRangeException.ThrowIfNegative(initialCount);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(initialCount, maxCount);
        _permits = new PermitPool<Releaser>("AsyncSemaphore", new Releaser(this), initialCount, maxCount, timeProvider ?? TimeProvider.System);
    }

    /// <summary>
    /// A name for diagnostics (<c>new AsyncSemaphore(64) { Name = "partner-api" }</c>): shown by <see cref="ToString"/> and
    /// the <c>asynctools.name</c> tag of its metrics; null (the default) for none.
    /// </summary>
    public string? Name
    {
        get => _permits.Name;
        init => _permits.Name = value;
    }

    /// <summary>Permits available now (a snapshot).</summary>
    public int CurrentCount => _permits.CurrentCount;

    /// <summary>The most permits there can be.</summary>
    public int MaxCount => _permits.MaxCount;

    /// <summary>The line of waiters, for tests.</summary>
    internal WaitLines Lines => _permits.Lines;

    /// <summary>Takes a permit, waiting in FIFO order while none is available.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that returns the permit when disposed.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before a permit was taken.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ValueTask<Releaser> AcquireAsync(CancellationToken cancellationToken = default) =>
        _permits.AcquireAsync(cancellationToken);

    /// <summary>Takes a permit, waiting in FIFO order at most <paramref name="timeout"/>.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/>
    /// to take one now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that returns the permit when disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">No permit was taken within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before a permit was taken.</exception>
    public ValueTask<Releaser> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        _permits.AcquireAsync(timeout, cancellationToken);

    /// <summary>Takes a permit if one is available and nobody waits; never waits. Release it with <see cref="Release(int)"/>.</summary>
    /// <returns>True if a permit was taken.</returns>
    public bool TryAcquire() => _permits.TryAcquire();

    /// <summary>Returns permits, handing them to the oldest waiters first.</summary>
    /// <param name="releaseCount">How many permits to return.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="releaseCount"/> is not positive.</exception>
    /// <exception cref="SemaphoreFullException">The count would exceed <see cref="MaxCount"/>; nothing was released.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release(int releaseCount = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(releaseCount);
        if (!_permits.Release(releaseCount))
        {
            ThrowHelper.ThrowSemaphoreFull();
        }
    }

    /// <summary>Describes the state, like Toro's <c>__str__</c>: <c>AsyncSemaphore(count=0, max=4, waiters=2)</c>, or
    /// with a <see cref="Name"/> <c>AsyncSemaphore(name="partner-api", count=0, max=4, waiters=2)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString() => Display.Format(
        "AsyncSemaphore",
        Name,
        $"count={CurrentCount}, max={(MaxCount == int.MaxValue ? "unbounded" : MaxCount.ToString(System.Globalization.CultureInfo.InvariantCulture))}, waiters={_permits.WaiterCount}");

    /// <summary>Returns one permit when disposed. Dispose it exactly once; <c>default(Releaser)</c> does nothing.</summary>
    public readonly struct Releaser : IDisposable
    {
        private readonly AsyncSemaphore? _owner;

        internal Releaser(AsyncSemaphore owner) => _owner = owner;

        /// <summary>Returns the permit.</summary>
        /// <remarks>Dispose each releaser exactly once. One disposed again is one <see cref="Release(int)"/> too many, as a
        /// second <see cref="SemaphoreSlim.Release()"/> would be: it adds a permit that nobody returned (or hands it to
        /// the oldest waiter).</remarks>
        /// <exception cref="SemaphoreFullException">The semaphore is already at <see cref="MaxCount"/> (as when this
        /// releaser was disposed before); the count is unchanged.</exception>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Dispose() => _owner?.Release();
    }
}
