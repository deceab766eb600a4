namespace AsyncIterTools.Internal;

/// <summary>
/// One overall deadline driven by a <see cref="TimeProvider"/>: its <see cref="Token"/> is cancelled when the
/// timeout elapses. <see langword="null"/> or <see cref="Timeout.InfiniteTimeSpan"/> never expires;
/// <see cref="TimeSpan.Zero"/> is expired from the start.
/// </summary>
internal sealed class Deadline : IDisposable
{
    /// <summary>Cancelled exactly when the deadline passes; never disposed while the timer may still fire.</summary>
    private readonly CancellationTokenSource? _expired;

    /// <summary>The one-shot timer that cancels <see cref="_expired"/>; null when there is no finite timeout.</summary>
    private readonly ITimer? _timer;

    public Deadline(TimeSpan? timeout, TimeProvider timeProvider)
    {
        if (timeout is not { } t || t == Timeout.InfiniteTimeSpan)
        {
            return;
        }

        _expired = new CancellationTokenSource();
        if (t == TimeSpan.Zero)
        {
            _expired.Cancel();
            return;
        }

        _timer = timeProvider.CreateTimer(static s => Expire((CancellationTokenSource)s!), _expired, t, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Gets a token cancelled when the deadline passes (<see cref="CancellationToken.None"/> without one).</summary>
    public CancellationToken Token => _expired?.Token ?? CancellationToken.None;

    /// <summary>Gets a value indicating whether the deadline has passed.</summary>
    public bool IsExpired => _expired?.IsCancellationRequested ?? false;

    public void Dispose()
    {
        // The timer is stopped first; a callback already running may still cancel the source, so the source is
        // not disposed (it owns no timer or wait handle, so there is nothing to release).
        _timer?.Dispose();
    }

    private static void Expire(CancellationTokenSource source)
    {
        // Cancel runs the registrations (a pending channel read) on the timer thread; they only complete tasks.
        source.Cancel();
    }
}
