namespace AsyncTools.Testing;

/// <summary>
/// A <see cref="FakeTimeProvider"/> that also counts its timers, for tests that must know a timer was armed before
/// they advance the clock, or that a wait left no timer behind.
/// </summary>
/// <remarks>
/// Time and firing are <see cref="FakeTimeProvider"/>'s: <see cref="FakeTimeProvider.Advance"/> fires every timer due
/// at or before the new time synchronously on the calling thread (earliest first), and the clock already reads the new
/// time inside those callbacks; a timer created with a zero due time fires at once, inside <c>CreateTimer</c>.
/// </remarks>
public sealed class CountingTimeProvider : FakeTimeProvider
{
    private readonly object _gate = new();
    private readonly List<(int Count, TaskCompletionSource Signal)> _armWaiters = new();
    private int _activeTimers;
    private int _armedTimers;
    private long _timerCreations;

    /// <summary>Timers created and not yet disposed (armed or not).</summary>
    public int ActiveTimers
    {
        get { lock (_gate) { return _activeTimers; } }
    }

    /// <summary>Timers that will fire when the clock reaches their due time.</summary>
    public int ArmedTimers
    {
        get { lock (_gate) { return _armedTimers; } }
    }

    /// <summary>How many timers were ever created.</summary>
    public long TimerCreations => Interlocked.Read(ref _timerCreations);

    /// <summary>
    /// Completes once at least <paramref name="count"/> timers are armed. A test that advances the clock while code on
    /// another thread is about to arm a timer must wait for the arming first: a timer armed after an Advance is due
    /// relative to the new time, exactly as a real timer armed late would be.
    /// </summary>
    public Task WaitForArmedTimersAsync(int count = 1)
    {
        lock (_gate)
        {
            if (_armedTimers >= count)
            {
                return Task.CompletedTask;
            }

            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _armWaiters.Add((count, signal));
            return signal.Task;
        }
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ArgumentNullException.ThrowIfNull(callback);
        Interlocked.Increment(ref _timerCreations);
        var timer = new CountedTimer(this, callback, state);
        lock (_gate)
        {
            _activeTimers++;
        }

        timer.Start(dueTime, period);
        return timer;
    }

    /// <summary>Completes the arm waiters now satisfied. Caller holds the lock; completions run asynchronously.</summary>
    private void SignalArmWaitersLocked()
    {
        for (int i = _armWaiters.Count - 1; i >= 0; i--)
        {
            if (_armedTimers >= _armWaiters[i].Count)
            {
                _armWaiters[i].Signal.TrySetResult();
                _armWaiters.RemoveAt(i);
            }
        }
    }

    /// <summary>
    /// Wraps the provider's own timer to keep the counts. A timer counts as armed only once the provider has scheduled
    /// it, so a test woken by <see cref="WaitForArmedTimersAsync"/> can advance the clock past it.
    /// </summary>
    private sealed class CountedTimer(CountingTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        private ITimer? _inner;
        private bool _armed;
        private bool _periodic;
        private bool _disposed;
        private int _fires;

        public void Start(TimeSpan dueTime, TimeSpan period)
        {
            int fires = BeginChange();
            _inner = owner.CreateBaseTimer(static s => ((CountedTimer)s!).Fire(), this, dueTime, period);
            EndChange(fires, dueTime, period);
        }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            int fires = BeginChange();
            if (fires < 0)
            {
                return false;
            }

            bool changed = _inner!.Change(dueTime, period);
            EndChange(fires, dueTime, period);
            return changed;
        }

        public void Dispose()
        {
            lock (owner._gate)
            {
                if (_disposed)
                {
                    return;
                }

                _disposed = true;
                owner._activeTimers--;
                DisarmLocked();
            }

            _inner?.Dispose();
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return default;
        }

        /// <summary>Disarms the timer while it is rescheduled; returns the fire count to compare after, or -1 if disposed.</summary>
        private int BeginChange()
        {
            lock (owner._gate)
            {
                if (_disposed)
                {
                    return -1;
                }

                DisarmLocked();
                return _fires;
            }
        }

        /// <summary>Counts the timer as armed if it is scheduled and did not already fire once and for all.</summary>
        private void EndChange(int firesBefore, TimeSpan dueTime, TimeSpan period)
        {
            bool periodic = period != Timeout.InfiniteTimeSpan && period != TimeSpan.Zero;
            lock (owner._gate)
            {
                _periodic = periodic;
                if (!_disposed && dueTime != Timeout.InfiniteTimeSpan && (periodic || _fires == firesBefore))
                {
                    _armed = true;
                    owner._armedTimers++;
                    owner.SignalArmWaitersLocked();
                }
            }
        }

        private void Fire()
        {
            lock (owner._gate)
            {
                _fires++;
                if (!_periodic)
                {
                    DisarmLocked();
                }
            }

            callback(state);
        }

        private void DisarmLocked()
        {
            if (_armed)
            {
                _armed = false;
                owner._armedTimers--;
            }
        }
    }

    private ITimer CreateBaseTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        base.CreateTimer(callback, state, dueTime, period);
}
