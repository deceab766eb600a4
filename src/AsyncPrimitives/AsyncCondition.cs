using System.Diagnostics;
using System.Runtime.ExceptionServices;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A condition variable for asynchronous code (Toro's <c>Condition</c>, <c>asyncio.Condition</c>): callers holding
/// its <see cref="AsyncLock"/> wait for a notification, releasing the lock while they wait.
/// </summary>
/// <remarks>
/// <para><b>Protocol.</b> Acquire the lock (<see cref="AcquireAsync(CancellationToken)"/>), check your condition, and
/// <see cref="WaitAsync(CancellationToken)"/> while it does not hold; <see cref="WaitAsync(CancellationToken)"/> releases
/// the lock atomically with joining the line of waiters (so no notification between the two is lost), and always
/// re-acquires the lock before it returns or throws, also on timeout and cancellation. Notify while holding the lock
/// after changing the state the waiters check; <see cref="WaitUntilAsync(Func{bool}, CancellationToken)"/> does the
/// checking loop for you.</para>
/// <para><b>Fairness.</b> Waiters are notified strictly in the order they began waiting. <see cref="Notify(int)"/>
/// wakes the <c>count</c> oldest waiters still waiting: waiters that timed out or were cancelled already left the
/// line and do not use up the count. Notified waiters get the lock back in the order they were notified, ahead of
/// anyone who asks for it after the notify (as in asyncio and tornado); a waiter that times out or is cancelled
/// queues for the lock at that moment.</para>
/// <para><b>Cancellation and timeouts.</b> A timed-out wait throws <see cref="TimeoutException"/>, a cancelled one
/// <see cref="OperationCanceledException"/>, in both cases after re-acquiring the lock. A notification that races
/// with a timeout or cancellation is either received (the wait returns normally) or left for the next waiter.</para>
/// <para><b>Continuations.</b> <see cref="Notify(int)"/> never runs a waiter's continuation inline.</para>
/// </remarks>
/// <example>
/// <code>
/// var condition = new AsyncCondition();
/// var items = new Queue&lt;int&gt;();
/// // consumer
/// using (await condition.AcquireAsync())
/// {
///     await condition.WaitUntilAsync(() =&gt; items.Count &gt; 0);
///     int item = items.Dequeue();
/// }
/// // producer
/// using (await condition.AcquireAsync())
/// {
///     items.Enqueue(42);
///     condition.Notify();
/// }
/// </code>
/// </example>
[DebuggerDisplay("Name = {Name}, Waiters = {_waiters.Count}")]
public sealed class AsyncCondition
{
    private readonly Lock _sync = new();

    /// <summary>Callers waiting for a notification, oldest first. A waiter that leaves it, notified, timed out or
    /// cancelled, moves on to the tail of the lock's line and resumes once the lock is handed to it.</summary>
    private readonly WaitQueue<AsyncLock.Releaser, Policy> _waiters;

    private readonly AsyncLock _lock;
    private readonly TimeProvider _timeProvider;

    /// <summary>Creates a condition over <paramref name="lock"/>, or over a new lock if it is null.</summary>
    /// <param name="lock">The lock callers hold around <see cref="WaitAsync(CancellationToken)"/>; several conditions may share one.</param>
    /// <param name="timeProvider">The clock for the timeouts of <see cref="WaitAsync(TimeSpan, CancellationToken)"/> and
    /// <see cref="WaitUntilAsync(Func{bool}, TimeSpan, CancellationToken)"/>, and of the lock the condition makes when
    /// <paramref name="lock"/> is null; <see cref="TimeProvider.System"/> when null. Over a given lock,
    /// <see cref="AcquireAsync(TimeSpan, CancellationToken)"/> times out on that lock's clock.</param>
    public AsyncCondition(AsyncLock? @lock = null, TimeProvider? timeProvider = null)
    {
        _timeProvider = timeProvider ?? TimeProvider.System;
        _lock = @lock ?? new AsyncLock(_timeProvider);
        _waiters = new WaitQueue<AsyncLock.Releaser, Policy>("AsyncCondition", default, _sync, _timeProvider, reacquire: _lock.Waiters);
    }

    /// <summary>
    /// A name for diagnostics (<c>new AsyncCondition { Name = "orders-ready" }</c>): shown by <see cref="ToString"/> and
    /// the <c>asynctools.name</c> tag of its metrics; null (the default) for none.
    /// </summary>
    public string? Name
    {
        get => _waiters.Name;
        init => _waiters.Name = value;
    }

    /// <summary>Whether the condition's lock is held (a snapshot).</summary>
    public bool IsLocked => _lock.IsLocked;

    /// <summary>The line of callers waiting for a notification, for tests.</summary>
    internal WaitLines Lines => new(_waiters);

    /// <summary>Acquires the condition's lock.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A releaser that releases the lock when disposed.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was acquired.</exception>
    public ValueTask<AsyncLock.Releaser> AcquireAsync(CancellationToken cancellationToken = default) => _lock.AcquireAsync(cancellationToken);

    /// <summary>Acquires the condition's lock, waiting at most <paramref name="timeout"/>.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/> to acquire now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A releaser that releases the lock when disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The lock was not acquired within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was acquired.</exception>
    public ValueTask<AsyncLock.Releaser> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        _lock.AcquireAsync(timeout, cancellationToken);

    /// <summary>Releases the condition's lock.</summary>
    /// <exception cref="SynchronizationLockException">The lock is not held.</exception>
    public void Release() => _lock.Release();

    /// <summary>
    /// Releases the lock, waits for a notification, and re-acquires the lock. The caller must hold the lock.
    /// </summary>
    /// <param name="cancellationToken">Cancels the wait; the lock is re-acquired before the exception is thrown.</param>
    /// <returns>A task that completes, holding the lock again, after a notification.</returns>
    /// <exception cref="SynchronizationLockException">The lock is not held.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first (the lock is held again).</exception>
    public ValueTask WaitAsync(CancellationToken cancellationToken = default) => WaitCore(Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>
    /// Releases the lock, waits at most <paramref name="timeout"/> for a notification, and re-acquires the lock.
    /// The caller must hold the lock.
    /// </summary>
    /// <param name="timeout">How long to wait for the notification: <see cref="Timeout.InfiniteTimeSpan"/> for no limit.
    /// Re-acquiring the lock afterwards is not limited by it.</param>
    /// <param name="cancellationToken">Cancels the wait; the lock is re-acquired before the exception is thrown.</param>
    /// <returns>A task that completes, holding the lock again, after a notification.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="SynchronizationLockException">The lock is not held.</exception>
    /// <exception cref="TimeoutException">No notification came within <paramref name="timeout"/> (the lock is held again).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first (the lock is held again).</exception>
    public ValueTask WaitAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return WaitCore(timeout, cancellationToken);
    }

    /// <summary>Waits, as <see cref="WaitAsync(CancellationToken)"/> does, until <paramref name="predicate"/> returns true.
    /// The caller must hold the lock; the predicate runs while it is held.</summary>
    /// <param name="predicate">The condition to wait for; checked first, then after each notification.</param>
    /// <param name="cancellationToken">Cancels the wait; the lock is re-acquired before the exception is thrown.</param>
    /// <returns>A task that completes, holding the lock, once <paramref name="predicate"/> returned true.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="predicate"/> is null.</exception>
    /// <exception cref="SynchronizationLockException">The lock is not held.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first (the lock is held again).</exception>
    public ValueTask WaitUntilAsync(Func<bool> predicate, CancellationToken cancellationToken = default) =>
        WaitUntilAsync(predicate, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Waits, as <see cref="WaitAsync(TimeSpan, CancellationToken)"/> does, until <paramref name="predicate"/>
    /// returns true, for at most <paramref name="timeout"/> in all. The caller must hold the lock.</summary>
    /// <param name="predicate">The condition to wait for; checked first, then after each notification, and once more
    /// when the time is up (with the lock held again).</param>
    /// <param name="timeout">The overall time limit: <see cref="Timeout.InfiniteTimeSpan"/> for none.</param>
    /// <param name="cancellationToken">Cancels the wait; the lock is re-acquired before the exception is thrown.</param>
    /// <returns>A task that completes, holding the lock, once <paramref name="predicate"/> returned true.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="predicate"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="SynchronizationLockException">The lock is not held.</exception>
    /// <exception cref="TimeoutException">The predicate was still false when <paramref name="timeout"/> had passed and the
    /// lock was held again.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first (the lock is held again).</exception>
    public ValueTask WaitUntilAsync(Func<bool> predicate, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        TimeoutArgument.ThrowIfInvalid(timeout);
        EnsureLocked();
        return predicate() ? default : WaitUntilSlow(predicate, timeout, cancellationToken);
    }

    private async ValueTask WaitUntilSlow(Func<bool> predicate, TimeSpan timeout, CancellationToken cancellationToken)
    {
        long start = _timeProvider.GetTimestamp();
        do
        {
            TimeSpan remaining = timeout;
            if (timeout != Timeout.InfiniteTimeSpan)
            {
                remaining = TimeoutArgument.Remaining(timeout, _timeProvider, start);
            }

            try
            {
                await WaitCore(remaining, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException) when (remaining != TimeSpan.Zero)
            {
                // The lock is held again, and the state may have changed while this waited without it: a last look (as
                // Python's wait_for returns the predicate's last value). A zero wait never let the lock go.
                if (predicate())
                {
                    return;
                }

                throw;
            }
        }
        while (!predicate());
    }

    /// <summary>Wakes the <paramref name="count"/> oldest waiters (fewer if fewer wait). They get the lock back in
    /// this order, ahead of anyone who asks for it later.</summary>
    /// <param name="count">How many waiters to wake.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative.</exception>
    public void Notify(int count = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var completions = default(Completions<AsyncLock.Releaser>);
        lock (_sync)
        {
            // Each notified waiter goes straight to the tail of the lock's line, in notify order.
            for (; count > 0 && _waiters.TryServeNext(default, ref completions); count--)
            {
            }
        }

        completions.CompleteAll();
    }

    /// <summary>Wakes every waiter. They get the lock back in the order they began waiting.</summary>
    public void NotifyAll()
    {
        var completions = default(Completions<AsyncLock.Releaser>);
        lock (_sync)
        {
            _waiters.ServeAll(default, ref completions);
        }

        completions.CompleteAll();
    }

    private ValueTask WaitCore(TimeSpan timeout, CancellationToken cancellationToken)
    {
        EnsureLocked();

        // Join the line first, then let go of the lock: a notifier can only get the lock after we are in line. An
        // already-cancelled token or a zero timeout fails at once, and the caller still holds the lock.
        ValueTask wait = _waiters.WaitWithoutResultAsync(default, default, timeout, cancellationToken);
        if (!wait.IsCompleted)
        {
            // We joined the line. The wait completes only once the lock is handed back to us, which cannot happen
            // before we release it here.
            try
            {
                _lock.Release();
            }
            catch (Exception e)
            {
                // A metrics listener threw as the release served the lock's next waiter (after that waiter had the lock):
                // the recording call fails, but this wait is in line, so the caller gets it and the lock back first.
                return WaitThenThrowAsync(wait, e);
            }
        }

        return wait;
    }

    /// <summary>The wait to its end (the lock held again), then <paramref name="releaseFailure"/>; a failure of the wait's
    /// own comes first (when a listener throwing at every measurement failed it too, that is the same listener).</summary>
    private static async ValueTask WaitThenThrowAsync(ValueTask wait, Exception releaseFailure)
    {
        await wait.ConfigureAwait(false);
        ExceptionDispatchInfo.Capture(releaseFailure).Throw();
    }

    private void EnsureLocked()
    {
        if (!_lock.IsLocked)
        {
            ThrowHelper.ThrowSynchronizationLock_NotHeld();
        }
    }

    /// <summary>Describes the state, like Toro's <c>__str__</c>: <c>AsyncCondition(locked, waiters=2)</c>; with a
    /// <see cref="Name"/> it comes first: <c>AsyncCondition(name="orders-ready", locked, waiters=2)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString() => Display.Format("AsyncCondition", Name, $"{(IsLocked ? "locked" : "unlocked")}, waiters={_waiters.Count}");

    /// <summary>The engine's view: a caller always waits (for a notification); nothing else to decide.</summary>
    private readonly struct Policy : IWaitPolicy<AsyncLock.Releaser>
    {
        public bool HasLockFreePath => false;

        public bool TryAcquire(AsyncLock.Releaser offer, bool willWait, ref Completions<AsyncLock.Releaser> completions, out AsyncLock.Releaser result)
        {
            result = default;
            return false;
        }

        public Exception? Refusal() => null;

        public void OnWaiterLeft(ref Completions<AsyncLock.Releaser> completions)
        {
        }
    }
}
