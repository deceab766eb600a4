namespace FanOut;

/// <summary>The scale-out demo: the same requests from several OS processes of this sample, which share one
/// <c>PostgresQueue</c> of work and one <c>PostgresSemaphore</c> as the global limit.</summary>
public sealed record ScaleOutOptions
{
    /// <summary>What each instance runs: <see cref="FanOutOptions.Count"/> is the number of requests in all,
    /// <see cref="FanOutOptions.Limit"/> each instance's own limit.</summary>
    public FanOutOptions FanOut { get; init; } = new();

    /// <summary>The number of instances (OS processes).</summary>
    public int Instances { get; init; } = 3;

    /// <summary>The most requests in flight across every instance (the <c>PostgresSemaphore</c>'s count); 0 for no
    /// global limit, which lets <see cref="Instances"/> × <see cref="FanOutOptions.Limit"/> be in flight.</summary>
    public int GlobalLimit { get; init; } = 64;

    /// <summary>Kills one instance (the last) mid-run, once a third of the requests are done and it has done some.</summary>
    public bool KillOne { get; init; }

    /// <summary>How often the progress is read and reported.</summary>
    public TimeSpan ProgressInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The longest the instances may take to start, and then again to finish the work and exit, before the run fails.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> or <see cref="ArgumentException"/> naming the first bad value.</summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(FanOut, nameof(FanOut));
        FanOut.Validate();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(Instances, nameof(Instances));
        ArgumentOutOfRangeException.ThrowIfNegative(GlobalLimit, nameof(GlobalLimit));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ProgressInterval, TimeSpan.Zero, nameof(ProgressInterval));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(Timeout, TimeSpan.Zero, nameof(Timeout));
        if (KillOne && Instances < 2)
        {
            throw new ArgumentException("Killing an instance needs at least two, so that another one takes over its work.", nameof(KillOne));
        }
    }
}
