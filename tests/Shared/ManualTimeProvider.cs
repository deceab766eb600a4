namespace AsyncTools.Testing;

/// <summary>
/// A <see cref="TimeProvider"/> whose clock moves only when a test calls <see cref="Advance"/>.
/// Timers due at or before the new time fire synchronously inside <see cref="Advance"/>, in due-time order,
/// on the calling thread and outside the provider's lock.
/// </summary>
public sealed class ManualTimeProvider : TimeProvider
{
    private readonly object _gate = new();
    private readonly List<ManualTimer> _timers = new();
    private readonly List<(int Count, TaskCompletionSource<bool> Signal)> _armWaiters = new();
    private DateTimeOffset _now;
    private long _timerCreations;

    public ManualTimeProvider()
        : this(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero))
    {
    }

    public ManualTimeProvider(DateTimeOffset start) => _now = start;

    /// <summary>Timers created and not yet disposed (armed or not).</summary>
    public int ActiveTimers
    {
        get { lock (_gate) { return _timers.Count; } }
    }

    /// <summary>Timers currently armed (with a finite due time).</summary>
    public int ArmedTimers
    {
        get { lock (_gate) { return _timers.Count(t => t.DueAt is not null); } }
    }

    /// <summary>
    /// Completes once at least <paramref name="count"/> timers are armed. A test that advances the clock while code on
    /// another thread is about to arm a timer must wait for the arming first: a timer armed after an Advance is due
    /// relative to the new time, exactly as a real timer armed late would be.
    /// </summary>
    public Task WaitForArmedTimersAsync(int count = 1)
    {
        lock (_gate)
        {
            if (ArmedLocked() >= count)
            {
                return Task.CompletedTask;
            }

            var signal = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            _armWaiters.Add((count, signal));
            return signal.Task;
        }
    }

    private int ArmedLocked() => _timers.Count(t => t.DueAt is not null);

    /// <summary>Completes the arm waiters now satisfied. Caller holds the lock; completions run asynchronously.</summary>
    private void SignalArmWaitersLocked()
    {
        int armed = ArmedLocked();
        for (int i = _armWaiters.Count - 1; i >= 0; i--)
        {
            if (armed >= _armWaiters[i].Count)
            {
                _armWaiters[i].Signal.TrySetResult(true);
                _armWaiters.RemoveAt(i);
            }
        }
    }

    /// <summary>How many timers were ever created.</summary>
    public long TimerCreations => Interlocked.Read(ref _timerCreations);

    public override DateTimeOffset GetUtcNow()
    {
        lock (_gate) { return _now; }
    }

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp()
    {
        lock (_gate) { return _now.UtcTicks; }
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ArgumentNullException.ThrowIfNull(callback);
        var timer = new ManualTimer(this, callback, state);
        Interlocked.Increment(ref _timerCreations);
        lock (_gate)
        {
            _timers.Add(timer);
            timer.Arm(_now, dueTime, period);
            SignalArmWaitersLocked();
        }
        return timer;
    }

    /// <summary>Moves the clock forward by <paramref name="delta"/>, firing every timer that comes due on the way.</summary>
    public void Advance(TimeSpan delta)
    {
        if (delta < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(delta));
        }

        DateTimeOffset target;
        lock (_gate) { target = _now + delta; }

        while (true)
        {
            ManualTimer? next = null;
            lock (_gate)
            {
                foreach (ManualTimer t in _timers)
                {
                    if (t.DueAt is { } due && due <= target && (next is null || due < next.DueAt!.Value))
                    {
                        next = t;
                    }
                }

                if (next is null)
                {
                    _now = target;
                    return;
                }

                _now = next.DueAt!.Value;
                next.DueAt = next.Period is { } p ? _now + p : null;
            }

            next.Fire();
        }
    }

    private void Remove(ManualTimer timer)
    {
        lock (_gate) { _timers.Remove(timer); }
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        public DateTimeOffset? DueAt { get; set; }

        public TimeSpan? Period { get; private set; }

        public void Arm(DateTimeOffset now, TimeSpan dueTime, TimeSpan period)
        {
            DueAt = dueTime == Timeout.InfiniteTimeSpan ? null : now + dueTime;
            Period = period == Timeout.InfiniteTimeSpan || period == TimeSpan.Zero ? null : period;
        }

        public void Fire() => callback(state);

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (owner._gate)
            {
                if (!owner._timers.Contains(this))
                {
                    return false;
                }

                Arm(owner._now, dueTime, period);
                owner.SignalArmWaitersLocked();
                return true;
            }
        }

        public void Dispose() => owner.Remove(this);

        public ValueTask DisposeAsync()
        {
            owner.Remove(this);
            return default;
        }
    }
}
