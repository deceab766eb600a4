namespace FanOut;

/// <summary>The outcome of one request after its retries.</summary>
/// <param name="Id">The request id.</param>
/// <param name="Succeeded">Whether an attempt got a 2xx answer.</param>
/// <param name="Attempts">How many HTTP calls were made (1 + retries used).</param>
/// <param name="Elapsed">From the first attempt's start to the last attempt's end, backoff included.</param>
/// <param name="Error">Why the last attempt failed, or <see langword="null"/>.</param>
public readonly record struct CallResult(int Id, bool Succeeded, int Attempts, TimeSpan Elapsed, string? Error);

/// <summary>A live view of a running pipeline, for progress output.</summary>
/// <param name="Total">The number of requests to make.</param>
/// <param name="Succeeded">Requests finished with success (retries included).</param>
/// <param name="Failed">Requests that failed every attempt.</param>
/// <param name="Retries">Extra attempts made so far.</param>
/// <param name="InFlight">HTTP calls in flight, as the client counts them.</param>
/// <param name="Consumed">Results the consumer workers have processed.</param>
/// <param name="Elapsed">Time since the run started.</param>
public readonly record struct FanOutSnapshot(int Total, int Succeeded, int Failed, int Retries, int InFlight, int Consumed, TimeSpan Elapsed)
{
    public int Completed => Succeeded + Failed;

    /// <summary>Completed requests per second so far.</summary>
    public double Rate => Elapsed > TimeSpan.Zero ? Completed / Elapsed.TotalSeconds : 0;
}

/// <summary>What a run did, counted by the consumers (so every number is a result that made it all the way through).</summary>
public sealed record FanOutResult
{
    public required int Requested { get; init; }

    /// <summary>Results the consumers processed: <see cref="Succeeded"/> + <see cref="Failed"/>.</summary>
    public int Consumed => Succeeded + Failed;

    public required int Succeeded { get; init; }

    public required int Failed { get; init; }

    /// <summary>HTTP calls made, retries included.</summary>
    public required int Attempts { get; init; }

    /// <summary>Attempts after a failed one: <see cref="Attempts"/> - <see cref="Consumed"/>.</summary>
    public required int Retries { get; init; }

    public required int Batches { get; init; }

    /// <summary>The largest number of HTTP calls the client had in flight at once.</summary>
    public required int ClientPeakInFlight { get; init; }

    public required TimeSpan WallTime { get; init; }

    /// <summary>Latency of single HTTP calls (every attempt).</summary>
    public required TimeSpan P50 { get; init; }

    public required TimeSpan P99 { get; init; }

    /// <summary>True if the run was stopped early: no request started after the stop, and <see cref="Consumed"/> counts
    /// every one that had started (the calls in flight finished).</summary>
    public required bool Cancelled { get; init; }

    /// <summary>How many times the consumers saw each id (index = id); 1 everywhere after a complete run.</summary>
    public required IReadOnlyList<int> ConsumedPerId { get; init; }

    /// <summary>Consumed requests per second of wall time.</summary>
    public double Throughput => WallTime > TimeSpan.Zero ? Consumed / WallTime.TotalSeconds : 0;
}
