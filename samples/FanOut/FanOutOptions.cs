namespace FanOut;

/// <summary>The client side of the demo: how many calls, how many at once, how results are batched and consumed.</summary>
public sealed record FanOutOptions
{
    /// <summary>The number of requests (ids 0 .. Count-1).</summary>
    public int Count { get; init; } = 2_000;

    /// <summary>The most HTTP calls in flight at once (Map's <c>maxConcurrency</c>).</summary>
    public int Limit { get; init; } = 64;

    /// <summary>Retries after a failed call that may succeed when tried again (a 5xx, 408 or 429 answer, a transport error
    /// or a timeout); 0 means one attempt. Another answer that is not 2xx (another 4xx) is not retried: that request fails
    /// at once.</summary>
    public int Retries { get; init; } = 3;

    /// <summary>The pause before a retry, times the attempt number.</summary>
    public TimeSpan RetryBackoff { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>The most results per batch.</summary>
    public int BatchSize { get; init; } = 50;

    /// <summary>The longest a batch waits for more results after its first one.</summary>
    public TimeSpan BatchDelay { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The number of consumer workers taking batches off the queue.</summary>
    public int Workers { get; init; } = 4;

    /// <summary>The most batches waiting in the queue before the producer waits (back-pressure).</summary>
    public int QueueCapacity { get; init; } = 8;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first bad value.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfNegative(Count, nameof(Count));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(Limit, nameof(Limit));
        ArgumentOutOfRangeException.ThrowIfNegative(Retries, nameof(Retries));
        ArgumentOutOfRangeException.ThrowIfLessThan(RetryBackoff, TimeSpan.Zero, nameof(RetryBackoff));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(BatchSize, nameof(BatchSize));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(BatchDelay, TimeSpan.Zero, nameof(BatchDelay));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(Workers, nameof(Workers));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(QueueCapacity, nameof(QueueCapacity));
    }
}
