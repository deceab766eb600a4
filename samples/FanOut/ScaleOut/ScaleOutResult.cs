namespace FanOut;

/// <summary>A live view of a scale-out run, for progress output.</summary>
/// <param name="Elapsed">Time since the instances were started.</param>
/// <param name="Total">The number of requests in all.</param>
/// <param name="Recorded">Requests whose result some instance recorded so far, each counted once: at most
/// <paramref name="Total"/>.</param>
/// <param name="RecordedPerInstance">Results each instance recorded so far (index = instance number - 1); empty before the
/// work is put. They add up to more than <paramref name="Recorded"/> when a result was recorded twice (a redelivery).</param>
/// <param name="Event">What just happened (an instance killed), or null.</param>
public readonly record struct ScaleOutProgress(TimeSpan Elapsed, int Total, int Recorded, IReadOnlyList<int> RecordedPerInstance, string? Event);

/// <summary>One instance of a scale-out run.</summary>
/// <param name="Number">From 1.</param>
/// <param name="ProcessId">Its OS process id.</param>
/// <param name="Recorded">Results it recorded (its business effects).</param>
/// <param name="Killed">Whether the demo killed it mid-run.</param>
/// <param name="ExitCode">How it ended (-1 when killed).</param>
public sealed record ScaleOutInstance(int Number, int ProcessId, int Recorded, bool Killed, int ExitCode);

/// <summary>What happened to one request id, from the effects table.</summary>
/// <param name="Effects">How many times an instance recorded its result (1, or more after a redelivery).</param>
/// <param name="MaxAttempt">The highest delivery attempt that recorded it (the queue counts attempts).</param>
/// <param name="Succeeded">Whether a recorded result was a success.</param>
/// <param name="Calls">HTTP calls made for it by the recorded results (retries included).</param>
public readonly record struct ScaleOutItem(int Effects, int MaxAttempt, bool Succeeded, int Calls);

/// <summary>What a scale-out run did, read from the database once every instance has stopped.</summary>
public sealed record ScaleOutResult
{
    public required int Requested { get; init; }

    /// <summary>Requests whose result some instance recorded and whose delivery was completed.</summary>
    public required int Completed { get; init; }

    /// <summary>Requests with no recorded result, plus items left in the queue or moved to its dead letters: 0 means
    /// none lost.</summary>
    public int Lost => Requested - Completed + (int)Unfinished + (int)DeadLetters;

    /// <summary>Items the queue still holds (put and not completed).</summary>
    public required long Unfinished { get; init; }

    /// <summary>Items moved to the dead-letter table.</summary>
    public required long DeadLetters { get; init; }

    /// <summary>Requests delivered more than once (a recorded attempt of 2 or more): the items a killed instance held.</summary>
    public required int DeliveredTwice { get; init; }

    /// <summary>Requests whose result was recorded more than once (a redelivery of an item whose first result was
    /// recorded but not completed).</summary>
    public required int RecordedTwice { get; init; }

    /// <summary>Requests whose result was a success.</summary>
    public required int Succeeded { get; init; }

    /// <summary>HTTP calls behind the recorded results (a killed instance's calls for results it never recorded are
    /// not counted).</summary>
    public required long Calls { get; init; }

    public required IReadOnlyList<ScaleOutInstance> Instances { get; init; }

    /// <summary>Per request id (index = id).</summary>
    public required IReadOnlyList<ScaleOutItem> Items { get; init; }

    /// <summary>From putting the work (once every instance was ready) until the last item was completed.</summary>
    public required TimeSpan WallTime { get; init; }

    public double Throughput => WallTime > TimeSpan.Zero ? Completed / WallTime.TotalSeconds : 0;
}
