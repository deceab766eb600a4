using System.Diagnostics;
using System.Runtime.CompilerServices;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A mutual-exclusion lock for asynchronous code (Toro's <c>Lock</c>, <c>tornado.locks.Lock</c>).
/// </summary>
/// <remarks>
/// <para><b>Fairness.</b> Waiters acquire strictly in the order they called <see cref="AcquireAsync(CancellationToken)"/>;
/// a caller never barges past a waiter, not even through <see cref="TryAcquire(out Releaser)"/>.</para>
/// <para><b>Not reentrant.</b> The lock has no notion of an owner: acquiring it again from the code that holds it
/// waits forever (or until the timeout). Any code may <see cref="Release"/> it.</para>
/// <para><b>Cancellation and timeouts.</b> Every wait has a <see cref="CancellationToken"/> form and a
/// <see cref="TimeSpan"/> form. A token that is already cancelled fails the call at once, even if the lock is free.
/// A wait that times out throws <see cref="TimeoutException"/>; one that is cancelled throws
/// <see cref="OperationCanceledException"/>. Either way the waiter leaves the line holding nothing. If the lock was
/// handed to a waiter at the same moment its token was cancelled, exactly one of the two wins: the wait returns the
/// lock (and the caller must release it), or it throws and the lock goes to the next waiter. The lock is never lost.</para>
/// <para><b>Continuations.</b> <see cref="Release"/> never runs a waiter's continuation inline; the waiter resumes
/// asynchronously. Uncontended acquire and release allocate nothing.</para>
/// </remarks>
/// <example>
/// <code>
/// var gate = new AsyncLock();
/// using (await gate.AcquireAsync(cancellationToken))
/// {
///     // one caller at a time
/// }
/// </code>
/// </example>
[DebuggerDisplay("Name = {Name}, IsLocked = {IsLocked}, Waiters = {_permits.WaiterCount}")]
public sealed class AsyncLock
{
    private readonly PermitPool<Releaser> _permits;

    /// <summary>Creates an unlocked lock.</summary>
    /// <param name="timeProvider">The clock for timeouts; <see cref="TimeProvider.System"/> when null.</param>
    public AsyncLock(TimeProvider? timeProvider = null)
    {
        _permits = new PermitPool<Releaser>("AsyncLock", new Releaser(this), 1, 1, timeProvider ?? TimeProvider.System);
    }

    /// <summary>
    /// A name for diagnostics (<c>new AsyncLock { Name = "cache-refresh" }</c>): shown by <see cref="ToString"/> and
    /// the <c>asynctools.name</c> tag of its metrics; null (the default) for none.
    /// </summary>
    public string? Name
    {
        get => _permits.Name;
        init => _permits.Name = value;
    }

    /// <summary>Whether the lock is held right now (a snapshot).</summary>
    public bool IsLocked => _permits.CurrentCount == 0;

    /// <summary>The line of waiters, for tests.</summary>
    internal WaitLines Lines => _permits.Lines;

    /// <summary>The line of waiters, which an <see cref="AsyncCondition"/>'s waiters join to get the lock back.</summary>
    internal IWaitQueue<Releaser> Waiters => _permits.Waiters;

    /// <summary>Acquires the lock, waiting in FIFO order while it is held.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the lock when disposed.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was acquired.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ValueTask<Releaser> AcquireAsync(CancellationToken cancellationToken = default) =>
        _permits.AcquireAsync(cancellationToken);

    /// <summary>Acquires the lock, waiting in FIFO order at most <paramref name="timeout"/>.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/>
    /// to acquire now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the lock when disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The lock was not acquired within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was acquired.</exception>
    public ValueTask<Releaser> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        _permits.AcquireAsync(timeout, cancellationToken);

    /// <summary>Acquires the lock if it is free and nobody waits for it; never waits.</summary>
    /// <param name="releaser">When this returns true, releases the lock when disposed.</param>
    /// <returns>True if the lock was acquired.</returns>
    public bool TryAcquire(out Releaser releaser)
    {
        bool acquired = _permits.TryAcquire();
        releaser = acquired ? new Releaser(this) : default;
        return acquired;
    }

    /// <summary>Releases the lock, handing it to the oldest waiter if there is one.</summary>
    /// <exception cref="SynchronizationLockException">The lock is not held.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release()
    {
        if (!_permits.Release(1))
        {
            ThrowHelper.ThrowSynchronizationLock_NotHeld();
        }
    }

    /// <summary>Describes the state, like Toro's <c>__str__</c>: <c>AsyncLock(locked, waiters=2)</c>, or with a
    /// <see cref="Name"/> <c>AsyncLock(name="cache-refresh", locked, waiters=2)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString() => Display.Format("AsyncLock", Name, $"{(IsLocked ? "locked" : "unlocked")}, waiters={_permits.WaiterCount}");

    /// <summary>Releases the lock when disposed. Dispose it exactly once; <c>default(Releaser)</c> does nothing.</summary>
    public readonly struct Releaser : IDisposable
    {
        private readonly AsyncLock? _owner;

        internal Releaser(AsyncLock owner) => _owner = owner;

        /// <summary>Releases the lock.</summary>
        /// <remarks>Dispose each releaser exactly once. A releaser (or a copy of it) disposed again after another caller
        /// has taken the lock cannot be told from that caller's release: it releases that caller's hold and throws
        /// nothing.</remarks>
        /// <exception cref="SynchronizationLockException">The lock is not held, as when this releaser was disposed before
        /// and nobody has taken the lock since.</exception>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Dispose() => _owner?.Release();
    }
}
