namespace AsyncTools.Testing;

/// <summary>
/// A legal but unusual clock (a <see cref="FakeTimeProvider"/> underneath): it can fail to create a timer or to dispose
/// one, and its first timestamp can read ahead of the ones after it, as a provider built on wall-clock time does after
/// the clock is stepped back.
/// </summary>
public sealed class MisbehavingTimeProvider : FakeTimeProvider
{
    private readonly TaskCompletionSource<TimeSpan> _firstDueTime = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _creationFailed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly long _firstReadingAhead;
    private int _readings;

    /// <param name="firstReadingAhead">How far ahead of the clock the first <see cref="GetTimestamp"/> reads.</param>
    public MisbehavingTimeProvider(TimeSpan firstReadingAhead = default)
    {
        _firstReadingAhead = firstReadingAhead.Ticks * TimestampFrequency / TimeSpan.TicksPerSecond;
    }

    /// <summary>Whether <see cref="CreateTimer"/> throws <see cref="InvalidOperationException"/>.</summary>
    public bool CreateTimerThrows { get; set; }

    /// <summary>Whether the timers created from now on throw <see cref="InvalidOperationException"/> from <c>Dispose</c>
    /// (after stopping).</summary>
    public bool TimerDisposeThrows { get; set; }

    /// <summary>How far the clock moves on while the first timer is being created (as a real clock does when the thread
    /// arming a timer is held up between reading the clock and creating the timer).</summary>
    public TimeSpan MovesWhileArmingFirst { get; set; }

    /// <summary>The due time of the first timer created.</summary>
    public Task<TimeSpan> FirstDueTime => _firstDueTime.Task;

    /// <summary>Completes when <see cref="CreateTimer"/> has thrown for the first time (see <see cref="CreateTimerThrows"/>).</summary>
    public Task CreationFailed => _creationFailed.Task;

    public override long GetTimestamp() =>
        base.GetTimestamp() + (Interlocked.Increment(ref _readings) == 1 ? _firstReadingAhead : 0);

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        if (CreateTimerThrows)
        {
            _creationFailed.TrySetResult();
            throw new InvalidOperationException("The clock cannot create a timer.");
        }

        if (!_firstDueTime.Task.IsCompleted && MovesWhileArmingFirst > TimeSpan.Zero)
        {
            Advance(MovesWhileArmingFirst);
        }

        ITimer timer = base.CreateTimer(callback, state, dueTime, period);
        _firstDueTime.TrySetResult(dueTime);
        return TimerDisposeThrows ? new DisposeThrowingTimer(timer) : timer;
    }

    private sealed class DisposeThrowingTimer(ITimer inner) : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period) => inner.Change(dueTime, period);

        public void Dispose()
        {
            inner.Dispose();
            throw new InvalidOperationException("The timer failed to stop.");
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return default;
        }
    }
}
