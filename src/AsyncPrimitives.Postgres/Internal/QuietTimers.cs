namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// The coordinator's clock: the <see cref="PostgresCoordinatorOptions.TimeProvider"/> given, whose timers are stopped
/// quietly. A provider is user code, and a timer that fails to stop must lose nothing (docs/primitives.md, "Time is
/// injectable"); the coordinator's timers are also stopped by the runtime's own code (a <c>Task.Delay</c> or
/// <c>WaitAsync</c> ending early, on whichever thread ends it: a release's, a pool thread's), where a throwing
/// <c>Dispose</c> would escape into that code or end the process. Everything else is the provider's, failures included
/// (a timer it cannot create fails the call that needed it). <see cref="TimeProvider.System"/> is used as it is.
/// </summary>
internal sealed class QuietTimers(TimeProvider inner) : TimeProvider
{
    public static TimeProvider For(TimeProvider? provider) =>
        provider is null || provider == System ? System : new QuietTimers(provider);

    public override DateTimeOffset GetUtcNow() => inner.GetUtcNow();

    public override TimeZoneInfo LocalTimeZone => inner.LocalTimeZone;

    public override long TimestampFrequency => inner.TimestampFrequency;

    public override long GetTimestamp() => inner.GetTimestamp();

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        new Timer(inner.CreateTimer(callback, state, dueTime, period));

    private sealed class Timer(ITimer timer) : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period) => timer.Change(dueTime, period);

        public void Dispose() => timer.DisposeQuietly();

        public ValueTask DisposeAsync()
        {
            timer.DisposeQuietly();
            return default;
        }
    }
}
