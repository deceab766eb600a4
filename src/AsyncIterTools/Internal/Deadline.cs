namespace AsyncIterTools.Internal;

/// <summary>
/// The one deadline type of AsyncIterTools (AsCompleted's overall timeout, each timed batch of Batch): its
/// <see cref="Token"/> is cancelled when the timeout has passed since the start, or when the linked token is cancelled.
/// A <see langword="null"/> or infinite timeout never expires; a zero timeout, or one already past, is expired from the
/// start.
/// </summary>
internal sealed class Deadline : IDisposable
{
    /// <summary>Cancelled when the deadline passes (or the linked token is cancelled); null when there is neither.</summary>
    private readonly CancellationTokenSource? _source;

    /// <summary>The one-shot timer that expires the deadline; null when there is no finite time left to wait.</summary>
    private readonly ITimer? _timer;

    /// <summary>Set (before <see cref="_source"/> is cancelled) once the time has passed.</summary>
    private volatile bool _expired;

    /// <summary>Starts a deadline of <paramref name="timeout"/> measured by <paramref name="timeProvider"/>.</summary>
    /// <param name="timeout">The time allowed; <see langword="null"/> or <see cref="Timeout.InfiniteTimeSpan"/> for none.</param>
    /// <param name="timeProvider">The clock.</param>
    /// <param name="startTimestamp">When the time started (a <paramref name="timeProvider"/> timestamp); null for now.</param>
    /// <param name="linkedToken">Also cancels <see cref="Token"/>, without expiring the deadline.</param>
    public Deadline(TimeSpan? timeout, TimeProvider timeProvider, long? startTimestamp = null, CancellationToken linkedToken = default)
    {
        if (timeout is not { } t || t == Timeout.InfiniteTimeSpan)
        {
            Token = linkedToken;
            return;
        }

        _source = linkedToken.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(linkedToken) : new CancellationTokenSource();
        Token = _source.Token;
        long start = startTimestamp ?? timeProvider.GetTimestamp();
        TimeSpan remaining = TimeoutArgument.Remaining(t, timeProvider, start);
        if (remaining > TimeSpan.Zero)
        {
            try
            {
                _timer = timeProvider.CreateTimer(static s => ((Deadline)s!).Expire(), this, remaining, Timeout.InfiniteTimeSpan);

                // Measured before arming: if the clock has moved on meanwhile, the timer is due that much sooner.
                TimeSpan left = TimeoutArgument.Remaining(t, timeProvider, start);
                if (left > TimeSpan.Zero && left < remaining)
                {
                    _timer.Change(left, Timeout.InfiniteTimeSpan);
                }
            }
            catch
            {
                _timer?.DisposeQuietly();
                _source.Dispose(); // its registration on the linked token goes with it
                throw;
            }
        }

        // If the clock has moved past the deadline meanwhile, expire now.
        if (TimeoutArgument.Remaining(t, timeProvider, start) == TimeSpan.Zero)
        {
            Expire();
        }
    }

    /// <summary>Gets a token cancelled when the deadline passes or the linked token is cancelled.</summary>
    public CancellationToken Token { get; }

    /// <summary>Gets a value indicating whether the time has passed (not merely the linked token cancelled).</summary>
    public bool IsExpired => _expired;

    public void Dispose()
    {
        // The timer is stopped first; a callback already running may still expire, which tolerates a disposed source.
        _timer?.DisposeQuietly();
        _source?.Dispose();
    }

    private void Expire()
    {
        _expired = true;

        // Runs the registrations (a pending channel read) on the timer thread; they only complete waits.
        _source!.CancelQuietly();
    }
}
