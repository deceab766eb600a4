using System.Threading.RateLimiting;

namespace AsyncIterTools.Tests;

/// <summary>
/// A <see cref="RateLimiter"/> that counts what an operator does with it: leases asked for, granted, refused, and
/// disposed (each lease counts its first disposal; a second one is recorded as a misuse). It grants everything, or
/// what <c>inner</c> grants, unless <see cref="Refuse"/> refuses a request; <see cref="Gate"/> holds requests back.
/// </summary>
public sealed class CountingLimiter(RateLimiter? inner = null) : RateLimiter
{
    private readonly TaskCompletionSource<bool> _firstRefusal = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _requests;
    private int _granted;
    private int _grantedDisposed;
    private int _refused;
    private int _refusedDisposed;
    private int _doubleDisposals;
    private int _held;
    private int _peakHeld;

    /// <summary>
    /// Decides request number n (0 for the first): null grants it (or asks <c>inner</c>); a value refuses it, with that
    /// <see cref="MetadataName.RetryAfter"/> when it is not null.
    /// </summary>
    public Func<int, Refusal?>? Refuse { get; init; }

    /// <summary>Awaited (with the request's token) before request number n is decided.</summary>
    public Func<int, CancellationToken, Task>? Gate { get; init; }

    /// <summary>A broken limiter: its granted leases' <see cref="RateLimitLease.IsAcquired"/> throws
    /// <see cref="InvalidDataException"/>.</summary>
    public bool IsAcquiredThrows { get; init; }

    /// <summary>A broken limiter: every request returns <see langword="null"/> instead of a lease.</summary>
    public bool ReturnsNull { get; init; }

    /// <summary>Carried by every granted lease as its <c>LEASE_LOST</c> metadata (when it can be cancelled).</summary>
    public CancellationToken LeaseLost { get; init; }

    /// <summary>When set, granted leases are <see cref="IAsyncDisposable"/> too: <c>DisposeAsync</c> signals
    /// <see cref="ReleaseStarted"/>, awaits this, then releases.</summary>
    public Func<Task>? AsyncRelease { get; init; }

    /// <summary>Completes when the first asynchronous release (see <see cref="AsyncRelease"/>) has started.</summary>
    public TaskCompletionSource ReleaseStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Requests made through <c>AcquireAsync</c>.</summary>
    public int Requests => Volatile.Read(ref _requests);

    /// <summary>Leases granted (<see cref="RateLimitLease.IsAcquired"/>).</summary>
    public int Granted => Volatile.Read(ref _granted);

    /// <summary>Granted leases disposed.</summary>
    public int GrantedDisposed => Volatile.Read(ref _grantedDisposed);

    /// <summary>Refused leases handed out.</summary>
    public int Refused => Volatile.Read(ref _refused);

    /// <summary>Refused leases disposed.</summary>
    public int RefusedDisposed => Volatile.Read(ref _refusedDisposed);

    /// <summary>Leases disposed more than once.</summary>
    public int DoubleDisposals => Volatile.Read(ref _doubleDisposals);

    /// <summary>Granted leases not yet disposed.</summary>
    public int Held => Volatile.Read(ref _held);

    /// <summary>The most granted leases held at once.</summary>
    public int PeakHeld => Volatile.Read(ref _peakHeld);

    /// <summary>Completes when the first refused lease has been handed out.</summary>
    public Task FirstRefusal => _firstRefusal.Task;

    public override TimeSpan? IdleDuration => null;

    public override string ToString() => "CountingLimiter(test)";

    /// <summary>Asserts that every lease handed out was disposed exactly once and none is held.</summary>
    public void ShouldHaveReturnedEveryLease()
    {
        Held.Should().Be(0, "no lease may be held once the operator has ended");
        GrantedDisposed.Should().Be(Granted, "every granted lease is disposed");
        RefusedDisposed.Should().Be(Refused, "every refused lease is disposed too");
        DoubleDisposals.Should().Be(0);
    }

    public override RateLimiterStatistics? GetStatistics() => inner?.GetStatistics();

    protected override RateLimitLease AttemptAcquireCore(int permitCount) =>
        throw new NotSupportedException("The operators only acquire asynchronously.");

    protected override async ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken)
    {
        permitCount.Should().Be(1, "an operator asks for one permit per call");
        int request = Interlocked.Increment(ref _requests) - 1;
        if (Gate is not null)
        {
            await Gate(request, cancellationToken);
        }

        if (ReturnsNull)
        {
            return null!;
        }

        if (Refuse?.Invoke(request) is { } refusal)
        {
            Interlocked.Increment(ref _refused);
            _firstRefusal.TrySetResult(true);
            return new CountingLease(this, granted: false, inner: null, refusal.RetryAfter);
        }

        RateLimitLease? innerLease = null;
        if (inner is not null)
        {
            innerLease = await inner.AcquireAsync(permitCount, cancellationToken);
            if (!innerLease.IsAcquired)
            {
                innerLease.Dispose();
                throw new InvalidOperationException("The inner limiter of a CountingLimiter must queue, not refuse.");
            }
        }

        Interlocked.Increment(ref _granted);
        Peak.Raise(ref _peakHeld, Interlocked.Increment(ref _held));
        return AsyncRelease is null
            ? new CountingLease(this, granted: true, innerLease, retryAfter: null) { IsAcquiredThrows = IsAcquiredThrows }
            : new AsyncCountingLease(this, innerLease);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            inner?.Dispose();
        }

        base.Dispose(disposing);
    }

    /// <summary>A refusal: with a <see cref="MetadataName.RetryAfter"/> when <paramref name="RetryAfter"/> is not null.</summary>
    public sealed record Refusal(TimeSpan? RetryAfter = null);

    private sealed class AsyncCountingLease : CountingLease, IAsyncDisposable
    {
        private readonly CountingLimiter _limiter;

        public AsyncCountingLease(CountingLimiter limiter, RateLimitLease? inner)
            : base(limiter, granted: true, inner, retryAfter: null) => _limiter = limiter;

        public async ValueTask DisposeAsync()
        {
            _limiter.ReleaseStarted.TrySetResult();
            await _limiter.AsyncRelease!();
            Dispose();
        }
    }

    private class CountingLease(CountingLimiter owner, bool granted, RateLimitLease? inner, TimeSpan? retryAfter) : RateLimitLease
    {
        private int _disposed;

        public bool IsAcquiredThrows { get; init; }

        public override bool IsAcquired => IsAcquiredThrows ? throw new InvalidDataException("the lease cannot tell") : granted;

        public override IEnumerable<string> MetadataNames =>
            granted ? (owner.LeaseLost.CanBeCanceled ? ["LEASE_LOST"] : [])
            : retryAfter is null ? [MetadataName.ReasonPhrase.Name] : [MetadataName.RetryAfter.Name, MetadataName.ReasonPhrase.Name];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            if (granted && owner.LeaseLost.CanBeCanceled && metadataName == "LEASE_LOST")
            {
                metadata = owner.LeaseLost;
                return true;
            }

            if (!granted && retryAfter is { } delay && metadataName == MetadataName.RetryAfter.Name)
            {
                metadata = delay;
                return true;
            }

            if (!granted && metadataName == MetadataName.ReasonPhrase.Name)
            {
                metadata = "refused by the test";
                return true;
            }

            metadata = null;
            return false;
        }

        protected override void Dispose(bool disposing)
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                Interlocked.Increment(ref owner._doubleDisposals);
                return;
            }

            if (granted)
            {
                Interlocked.Decrement(ref owner._held);
                Interlocked.Increment(ref owner._grantedDisposed);
                inner?.Dispose();
            }
            else
            {
                Interlocked.Increment(ref owner._refusedDisposed);
            }
        }
    }
}
