using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace AsyncPrimitives.Internal;

/// <summary>
/// Counted permits with FIFO waiters: the policy behind <see cref="AsyncLock"/> (one permit) and
/// <see cref="AsyncSemaphore"/>. Uncontended acquire and release are a single compare-and-swap, no lock, no allocation.
/// </summary>
/// <typeparam name="TGrant">What a successful acquire returns: the primitive's releaser, the same value every time.</typeparam>
internal sealed class PermitPool<TGrant> : IWaitOwner<TGrant>
{
    /// <summary><see cref="_state"/> value meaning "no permits, and waiters are queued: take the lock".</summary>
    private const int Contended = -1;

    private readonly Lock _sync = new();
    private readonly WaitQueue<TGrant> _waiters;
    private readonly TGrant _grant;
    private readonly int _maxCount;

    /// <summary>
    /// Permits available when &gt;= 0 (and then nobody waits), or <see cref="Contended"/> when none are available and
    /// waiters are queued. Fast paths only ever move it between non-negative values by CAS; only code holding
    /// <see cref="_sync"/> moves it to or from <see cref="Contended"/>. So while waiters exist no fast path can take
    /// or add a permit, which is what keeps newcomers from barging past the queue.
    /// </summary>
    private int _state;

    public PermitPool(TGrant grant, int initialCount, int maxCount, TimeProvider timeProvider)
    {
        Debug.Assert(initialCount >= 0 && initialCount <= maxCount);
        _grant = grant;
        _state = initialCount;
        _maxCount = maxCount;
        _waiters = new WaitQueue<TGrant>(_sync, timeProvider, this);
    }

    /// <summary>Permits available now.</summary>
    public int CurrentCount => Math.Max(Volatile.Read(ref _state), 0);

    /// <summary>The most permits there can be.</summary>
    public int MaxCount => _maxCount;

    /// <summary>Number of queued waiters (a snapshot).</summary>
    public int WaiterCount
    {
        get
        {
            lock (_sync)
            {
                return _waiters.Count;
            }
        }
    }

    /// <summary>Nodes held for reuse (for leak tests).</summary>
    internal int PooledWaiters
    {
        get
        {
            lock (_sync)
            {
                return _waiters.PooledCount;
            }
        }
    }

    /// <summary>Takes a permit if one is free and nobody waits. Never waits, never allocates.</summary>
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

    /// <summary>Takes a permit, waiting in FIFO order if none is free.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ValueTask<TGrant> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<TGrant>(cancellationToken);
        }

        return TryAcquire() ? new ValueTask<TGrant>(_grant) : AcquireSlow(timeout, cancellationToken);
    }

    private ValueTask<TGrant> AcquireSlow(TimeSpan timeout, CancellationToken cancellationToken)
    {
        WaitNode<TGrant> node;
        lock (_sync)
        {
            while (true)
            {
                int state = _state;
                if (state > 0)
                {
                    if (Interlocked.CompareExchange(ref _state, state - 1, state) == state)
                    {
                        return new ValueTask<TGrant>(_grant);
                    }

                    continue; // a fast path moved the count; look again
                }

                if (timeout == TimeSpan.Zero)
                {
                    return ValueTask.FromException<TGrant>(ThrowHelper.TimeoutNow());
                }

                // Announce the queue before joining it, so a fast release that comes next takes the lock.
                if (state == Contended || Interlocked.CompareExchange(ref _state, Contended, 0) == 0)
                {
                    break;
                }
            }

            node = _waiters.Enqueue(_grant);
        }

        return _waiters.Arm(node, timeout, cancellationToken);
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

            while (releaseCount > 0 && _waiters.Dequeue() is { } node)
            {
                node.SetResult(_grant);
                completions.Add(node);
                releaseCount--;
            }

            Volatile.Write(ref _state, _waiters.IsEmpty ? releaseCount : Contended);
        }

        completions.CompleteAll();
        return true;
    }

    void IWaitOwner<TGrant>.OnWaiterLeft(ref Completions<TGrant> completions)
    {
        // Permits are zero while anyone waits; when the last waiter gives up, reopen the fast path.
        if (_waiters.IsEmpty)
        {
            Volatile.Write(ref _state, 0);
        }
    }

    public override string ToString() => $"count={CurrentCount}, waiters={WaiterCount}";
}
