using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace AsyncPrimitives.Internal;

/// <summary>
/// Counted permits with FIFO waiters: the policy behind <see cref="AsyncLock"/> (one permit) and
/// <see cref="AsyncSemaphore"/>. Uncontended acquire and release are a single compare-and-swap, no lock, no allocation.
/// </summary>
/// <typeparam name="TGrant">What a successful acquire returns: the primitive's releaser, the same value every time.</typeparam>
internal sealed class PermitPool<TGrant>
{
    /// <summary><see cref="_state"/> value meaning "no permits, and waiters are queued: take the lock".</summary>
    private const int Contended = -1;

    private readonly Lock _sync = new();
    private readonly WaitQueue<TGrant, Policy> _waiters;
    private readonly TGrant _grant;
    private readonly int _maxCount;

    /// <summary>
    /// Permits available when &gt;= 0 (and then nobody waits), or <see cref="Contended"/> when none are available and
    /// waiters are queued. Fast paths only ever move it between non-negative values by CAS; only code holding
    /// <see cref="_sync"/> moves it to or from <see cref="Contended"/>. So while waiters exist no fast path can take
    /// or add a permit, which is what keeps newcomers from barging past the queue.
    /// </summary>
    private int _state;

    public PermitPool(string kind, TGrant grant, int initialCount, int maxCount, TimeProvider timeProvider)
    {
        Debug.Assert(initialCount >= 0 && initialCount <= maxCount);
        _grant = grant;
        _state = initialCount;
        _maxCount = maxCount;
        _waiters = new WaitQueue<TGrant, Policy>(kind, new Policy(this), _sync, timeProvider);
    }

    /// <summary>Permits available now.</summary>
    public int CurrentCount => Math.Max(Volatile.Read(ref _state), 0);

    /// <summary>The most permits there can be.</summary>
    public int MaxCount => _maxCount;

    /// <summary>The owner's name, the <c>asynctools.name</c> tag of its waits.</summary>
    public string? Name
    {
        get => _waiters.Name;
        set => _waiters.Name = value;
    }

    /// <summary>Number of queued waiters (a snapshot).</summary>
    public int WaiterCount => _waiters.Count;

    /// <summary>The line of waiters, which an <see cref="AsyncCondition"/>'s waiters join to re-acquire the lock.</summary>
    public IWaitQueue<TGrant> Waiters => _waiters;

    /// <summary>The line, for tests.</summary>
    public WaitLines Lines => new(_waiters);

    /// <summary>Takes a permit if one is free (and so nobody waits). Never waits, never allocates, never locks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAcquire()
    {
        int state = Volatile.Read(ref _state);
        while (state > 0)
        {
            int seen = Interlocked.CompareExchange(ref _state, state - 1, state);
            if (seen == state)
            {
                return true;
            }

            state = seen;
        }

        return false;
    }

    /// <summary>Takes a permit, waiting in FIFO order for as long as none is free.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ValueTask<TGrant> AcquireAsync(CancellationToken cancellationToken) =>
        _waiters.WaitAsync(new Policy(this), _grant, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Takes a permit, waiting in FIFO order at most <paramref name="timeout"/> (validated here) if none is free.</summary>
    public ValueTask<TGrant> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return _waiters.WaitAsync(new Policy(this), _grant, timeout, cancellationToken);
    }

    /// <summary>
    /// Returns <paramref name="releaseCount"/> permits, handing them to the oldest waiters first. Returns false,
    /// changing nothing, if the count would exceed the maximum.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Release(int releaseCount)
    {
        Debug.Assert(releaseCount > 0);
        int state = Volatile.Read(ref _state);
        while (state >= 0)
        {
            if (releaseCount > _maxCount - state)
            {
                return false;
            }

            int seen = Interlocked.CompareExchange(ref _state, state + releaseCount, state);
            if (seen == state)
            {
                return true;
            }

            state = seen;
        }

        return ReleaseContended(releaseCount);
    }

    public override string ToString() => $"count={CurrentCount}, waiters={WaiterCount}";

    private bool ReleaseContended(int releaseCount)
    {
        var completions = default(Completions<TGrant>);
        lock (_sync)
        {
            if (_state != Contended)
            {
                // The waiters left (timed out or were cancelled) since we looked; the fast path applies again.
                return Release(releaseCount);
            }

            // No permits are free while waiters queue, so the check is against zero.
            if (releaseCount > _maxCount)
            {
                return false;
            }

            while (releaseCount > 0 && _waiters.TryServeNext(_grant, ref completions))
            {
                releaseCount--;
            }

            Volatile.Write(ref _state, _waiters.IsEmpty ? releaseCount : Contended);
        }

        completions.CompleteAll();
        return true;
    }

    /// <summary>Under the lock: take a permit if one is free; if not, announce the queue the caller is about to join
    /// (move the state to <see cref="Contended"/>), so a fast release that comes next takes the lock.</summary>
    private bool TryAcquireOrAnnounce()
    {
        while (true)
        {
            int state = _state;
            if (state > 0)
            {
                if (Interlocked.CompareExchange(ref _state, state - 1, state) == state)
                {
                    return true;
                }

                continue; // a fast path moved the count; look again
            }

            if (state == Contended || Interlocked.CompareExchange(ref _state, Contended, 0) == 0)
            {
                return false;
            }
        }
    }

    private readonly struct Policy(PermitPool<TGrant> pool) : IWaitPolicy<TGrant>
    {
        public bool HasLockFreePath => true;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool TryAcquire(TGrant offer, bool willWait, ref Completions<TGrant> completions, out TGrant result)
        {
            result = pool._grant;
            return willWait ? pool.TryAcquireOrAnnounce() : pool.TryAcquire();
        }

        public Exception? Refusal() => null;

        public void OnWaiterLeft(ref Completions<TGrant> completions)
        {
            // Permits are zero while anyone waits; when the last waiter gives up, reopen the fast path.
            if (pool._waiters.IsEmpty)
            {
                Volatile.Write(ref pool._state, 0);
            }
        }
    }
}
