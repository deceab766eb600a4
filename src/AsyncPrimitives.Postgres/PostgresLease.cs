using System.Diagnostics;
using System.Globalization;
using AsyncPrimitives.Postgres.Internal;

namespace AsyncPrimitives.Postgres;

/// <summary>
/// A lock or semaphore permit held by this process, granted by <see cref="PostgresLock"/> or
/// <see cref="PostgresSemaphore"/>. Release it with <see cref="ReleaseAsync"/> or by disposing it (<c>await using</c>).
/// </summary>
/// <remarks>
/// <para><b>Heartbeat and loss.</b> While the lease is held, its coordinator renews it every third of
/// <see cref="PostgresCoordinatorOptions.LeaseDuration"/>. It is lost when the coordinator's session ends (its LISTEN
/// connection failed: the backend was terminated, the server restarted) or when no renewal succeeded for a lease
/// duration less a margin (a tenth of it, at most 1 s, for this process's own scheduling delays); <see cref="Lost"/>
/// then fires. Work guarded by the lease should stop when it fires. A process cut off from a server that still sees
/// its connection sees <see cref="Lost"/> fire before the server frees the permit for others. When the server ends the
/// session itself (it terminated the backend, restarted, or saw the connection close), the permit is free for others
/// at once, and <see cref="Lost"/> fires when this process hears of it: at once when its connection reports the end,
/// by the lease's deadline at the latest. In between, another process may hold the permit too; only the fencing token
/// tells them apart.</para>
/// <para><b>Fencing.</b> A process can pause (a GC, a swapped-out VM) long enough to lose its lease without running
/// any code. Pass <see cref="FencingToken"/> to the resource the lease guards, and let it refuse a token lower than one
/// it has seen: a stale holder is then turned away even if it never noticed the loss.</para>
/// </remarks>
[DebuggerDisplay("{ToString(),nq}")]
public sealed class PostgresLease : IAsyncDisposable
{
    private readonly PermitSet _set;
    private readonly LeaseTracker _tracker;

    /// <summary>The first release's task (complete at once for a lease that was lost); every later call returns it.</summary>
    private Task? _release;

    internal PostgresLease(PermitSet set, LeaseTracker tracker)
    {
        _set = set;
        _tracker = tracker;
    }

    /// <summary>
    /// The fencing token: strictly greater than the token of every earlier grant of the same lock or semaphore (by
    /// any process), and never reused, also across server restarts and crashes. Not contiguous: other grants and waits
    /// take values of the same sequence, and it jumps far ahead after a crash.
    /// </summary>
    public long FencingToken => _tracker.Id;

    /// <summary>
    /// Cancelled when the lease is lost (see the remarks): its session ended, or it could not be renewed for a lease
    /// duration less a margin. Never cancelled by <see cref="ReleaseAsync"/>. Callbacks run on the thread pool.
    /// </summary>
    public CancellationToken Lost => _tracker.LostToken;

    /// <summary>
    /// Gives the permit back. Idempotent: a later call returns the first call's task; a no-op for a lease that was lost.
    /// Does not throw when the server cannot be reached: the permit, which is no longer renewed, is then free for others
    /// when its lease expires (at most <see cref="PostgresCoordinatorOptions.LeaseDuration"/> later). A data source
    /// disposed before its coordinator (misuse) can make it throw <see cref="ObjectDisposedException"/>.
    /// </summary>
    /// <returns>A task that completes when the server has freed the permit, or the attempt to reach it has ended.</returns>
    public ValueTask ReleaseAsync()
    {
        if (Volatile.Read(ref _release) is { } release)
        {
            return new ValueTask(release);
        }

        // The first call to publish its task releases (a call racing it returns that task); a lost lease has nothing to free.
        var released = new TaskCompletionSource();
        if (Interlocked.CompareExchange(ref _release, released.Task, null) is { } first)
        {
            return new ValueTask(first);
        }

        if (_tracker.TryRelease())
        {
            _ = ReleaseThenCompleteAsync(released);
        }
        else
        {
            released.SetResult();
        }

        return new ValueTask(released.Task);
    }

    /// <summary>Releases the lease: the same as <see cref="ReleaseAsync"/>.</summary>
    /// <returns>A task that completes when the release has.</returns>
    public ValueTask DisposeAsync() => ReleaseAsync();

    private async Task ReleaseThenCompleteAsync(TaskCompletionSource released)
    {
        try
        {
            await _set.ReleaseAsync(_tracker.Id).ConfigureAwait(false);
            released.SetResult();
        }
        catch (Exception e)
        {
            released.SetException(e); // a data source disposed before its coordinator (misuse): every call sees it
        }
    }

    /// <inheritdoc />
    public override string ToString() => string.Format(
        CultureInfo.InvariantCulture,
        "PostgresLease(name={0}, token={1}, {2})",
        _set.Name,
        FencingToken,
        _tracker.IsHeld ? "held" : _tracker.IsLost ? "lost" : "released");
}
