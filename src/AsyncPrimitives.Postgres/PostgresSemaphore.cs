using System.Diagnostics;
using System.Globalization;
using System.Threading.RateLimiting;
using AsyncPrimitives.Postgres.Internal;

namespace AsyncPrimitives.Postgres;

/// <summary>
/// A counting semaphore shared by every process that uses the same name in the same schema: at most
/// <see cref="MaxCount"/> leases of it are held at a time, across all of them, whatever crashes. Create it with
/// <see cref="PostgresCoordinator.CreateSemaphore"/>; use <see cref="AsRateLimiter"/> where a
/// <see cref="RateLimiter"/> is expected.
/// </summary>
/// <remarks>
/// <para><b>Fairness.</b> Waiters acquire in arrival order across processes: a waiter takes a permit only while fewer
/// waiters are ahead of it than permits are free, so while anyone waits, <see cref="TryAcquireAsync"/> fails, unless
/// more permits are free than waiters wait (holders that expired, before the waiters' next poll): a newcomer then takes
/// one of those, and every waiter still has its own.</para>
/// <para><b>The maximum.</b> Every process must use the same <see cref="MaxCount"/> for a name. A permit a process takes
/// with its own call is checked against its own maximum; one that a release hands to the first waiter in line is checked
/// against the maximum of the process releasing it. So while a changed maximum rolls out, the larger of the old and the
/// new one can apply, until every process uses the new one.</para>
/// <para><b>Cancellation, timeouts and failures</b> are as for <see cref="PostgresLock"/>: a cancelled or timed-out
/// wait leaves nothing on the server; a failed connection fails the waits in progress with
/// <see cref="PostgresCoordinationException"/> and loses the leases held; a crashed holder's permit is free as soon as
/// the server sees its connection close, and at the latest <see cref="PostgresCoordinatorOptions.LeaseDuration"/>
/// after its last heartbeat.</para>
/// </remarks>
/// <example>
/// <code>
/// PostgresSemaphore partnerApi = coordinator.CreateSemaphore("partner-api", maxCount: 64);
/// await using (await partnerApi.AcquireAsync(cancellationToken))
/// {
///     await CallPartnerAsync(cancellationToken); // at most 64 calls in flight across every instance
/// }
/// </code>
/// </example>
[DebuggerDisplay("{ToString(),nq}")]
public sealed class PostgresSemaphore
{
    private readonly PermitSet _set;

    internal PostgresSemaphore(PostgresCoordinator coordinator, string name, int maxCount) =>
        _set = new PermitSet(coordinator, 's', name, maxCount);

    /// <summary>The permits of this process, for tests.</summary>
    internal PermitSet Set => _set;

    /// <summary>The semaphore's name: every process that uses this name (in the same schema) shares the permits.</summary>
    public string Name => _set.Name;

    /// <summary>The most leases held at once, across all processes.</summary>
    public int MaxCount => _set.MaxCount;

    /// <summary>Takes a permit, waiting in FIFO order while none is free.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>The lease; release it (or dispose it) to give the permit back.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lease was granted.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, or the coordinator's connection failed during the wait.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask<PostgresLease> AcquireAsync(CancellationToken cancellationToken = default) => _set.AcquireAsync(cancellationToken);

    /// <summary>Takes a permit, waiting in FIFO order at most <paramref name="timeout"/>.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/>
    /// to take it now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>The lease; release it (or dispose it) to give the permit back.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">No lease was granted within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lease was granted.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, or the coordinator's connection failed during the wait.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask<PostgresLease> AcquireAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        _set.AcquireAsync(timeout, cancellationToken);

    /// <summary>Takes a permit if one is free and no one waits.</summary>
    /// <param name="cancellationToken">Cancels the call before it reaches the server.</param>
    /// <returns>The lease, or null when no permit is free or others wait.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the call.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask<PostgresLease?> TryAcquireAsync(CancellationToken cancellationToken = default) => _set.TryAcquireAsync(cancellationToken);

    /// <summary>The permits free now across all processes: <see cref="MaxCount"/> less the leases held (a snapshot).</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The number of free permits, from 0 to <see cref="MaxCount"/>.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask<int> GetCurrentCountAsync(CancellationToken cancellationToken = default) =>
        _set.GetFreeCountAsync(cancellationToken);

    /// <summary>
    /// This semaphore as a <see cref="RateLimiter"/>: each lease of the limiter is one permit of the semaphore, held
    /// until the lease is disposed. For APIs that take a limiter (such as AsyncIterTools' <c>MapUnordered</c>, or
    /// <see cref="RateLimiter.CreateChained"/> to combine it with a rate).
    /// </summary>
    /// <returns>A new limiter over this semaphore; disposing it does not affect the semaphore.</returns>
    /// <remarks>
    /// <see cref="RateLimiter.AcquireAsync"/> waits (FIFO) for a permit; a permit count of 0 answers whether a permit is
    /// free now, without waiting. <see cref="RateLimiter.AttemptAcquire"/> cannot reach the server without blocking,
    /// so it always returns a lease that is not acquired, with a <see cref="MetadataName.ReasonPhrase"/>; use
    /// <c>AcquireAsync</c>. A permit count above 1 is refused with <see cref="ArgumentOutOfRangeException"/>.
    /// An acquired lease carries its permit's <see cref="PostgresLease.Lost"/> token (<see cref="LeaseLostMetadata"/>)
    /// and <see cref="PostgresLease.FencingToken"/> (<see cref="FencingTokenMetadata"/>); work done under it should stop
    /// when the token fires (AsyncIterTools' limiter overloads cancel the call's token then). Disposing a lease releases
    /// the permit in the background; a lease is also <see cref="IAsyncDisposable"/>, whose <c>DisposeAsync</c> waits for
    /// the release (AsyncIterTools' operators use it, so the permit is back once the operator has ended). Disposing the limiter ends its waits in progress with a
    /// lease that is not acquired (as the BCL's limiters do) and leaves the leases already granted held. The limiter
    /// gives no statistics (<see cref="RateLimiter.GetStatistics"/> returns null).
    /// </remarks>
    public RateLimiter AsRateLimiter() => new Limiter(this);

    /// <summary>
    /// Gets the metadata (<c>LEASE_LOST</c>) of an acquired lease of <see cref="AsRateLimiter"/>: the
    /// <see cref="PostgresLease.Lost"/> token of the permit it holds. AsyncIterTools' limiter overloads cancel the call's
    /// token when it fires.
    /// </summary>
    public static MetadataName<CancellationToken> LeaseLostMetadata { get; } = MetadataName.Create<CancellationToken>("LEASE_LOST");

    /// <summary>Gets the metadata (<c>FENCING_TOKEN</c>) of an acquired lease of <see cref="AsRateLimiter"/>: the
    /// <see cref="PostgresLease.FencingToken"/> of the permit it holds.</summary>
    public static MetadataName<long> FencingTokenMetadata { get; } = MetadataName.Create<long>("FENCING_TOKEN");

    /// <inheritdoc />
    public override string ToString() =>
        string.Format(CultureInfo.InvariantCulture, "PostgresSemaphore(name={0}, max={1})", Name, MaxCount);

    /// <summary>The <see cref="RateLimiter"/> view of the semaphore.</summary>
    private sealed class Limiter(PostgresSemaphore semaphore) : RateLimiter
    {
        private static readonly RateLimitLease s_cannotAttempt = new Lease(
            null, "A PostgresSemaphore permit needs a round trip to the server: use AcquireAsync.");

        private static readonly RateLimitLease s_noneFree = new Lease(null, "No permit is free now.");

        private static readonly RateLimitLease s_free = new Lease(null, null);

        private static readonly RateLimitLease s_disposed = new Lease(null, "The limiter was disposed.");

        /// <summary>Cancelled when the limiter is disposed: the waits in progress end, as a BCL limiter's queued
        /// requests do, with a lease that is not acquired. Never disposed (a wait may still link to it).</summary>
        private readonly CancellationTokenSource _disposing = new();

        private volatile bool _disposed;

        public override TimeSpan? IdleDuration => null;

        public override RateLimiterStatistics? GetStatistics() => null;

        protected override RateLimitLease AttemptAcquireCore(int permitCount)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(permitCount, 1);
            return s_cannotAttempt;
        }

        protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken)
        {
            // At the call, not when awaited, as the BCL limiters check.
            ObjectDisposedException.ThrowIf(_disposed, this);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(permitCount, 1);
            return AcquireCoreAsync(permitCount, cancellationToken);
        }

        private async ValueTask<RateLimitLease> AcquireCoreAsync(int permitCount, CancellationToken cancellationToken)
        {
            if (permitCount == 0)
            {
                return await semaphore.GetCurrentCountAsync(cancellationToken).ConfigureAwait(false) > 0 ? s_free : s_noneFree;
            }

            using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposing.Token);
            try
            {
                return new Lease(await semaphore.AcquireAsync(wait.Token).ConfigureAwait(false), null);
            }
            catch (OperationCanceledException) when (_disposing.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                return s_disposed; // the wait left the line, holding nothing
            }
            catch (OperationCanceledException)
            {
                // With the caller's token, not the linked one (disposed by now), as the BCL limiters throw it.
                cancellationToken.ThrowIfCancellationRequested();
                throw;
            }
        }

        protected override void Dispose(bool disposing)
        {
            _disposed = true;
            _disposing.Cancel();
            base.Dispose(disposing);
        }

        public override string ToString() => "RateLimiter over " + semaphore;
    }

    /// <summary>
    /// A limiter lease: acquired when it carries a <see cref="PostgresLease"/>, else failed with a reason. An acquired
    /// one carries the lease's <see cref="PostgresLease.Lost"/> token as <c>LEASE_LOST</c> metadata and its
    /// <see cref="PostgresLease.FencingToken"/> as <c>FENCING_TOKEN</c>; <see cref="DisposeAsync"/> waits for the release.
    /// </summary>
    private sealed class Lease : RateLimitLease, IAsyncDisposable
    {
        private static readonly string[] s_heldMetadata = [LeaseLostMetadata.Name, FencingTokenMetadata.Name];

        /// <summary>The permit's lease (its release is idempotent); null for a lease that is not acquired.</summary>
        private readonly PostgresLease? _lease;

        /// <summary>Why it is not acquired; null when it is.</summary>
        private readonly string? _reason;

        public Lease(PostgresLease? held, string? reason)
        {
            _lease = held;
            _reason = reason;
        }

        public override bool IsAcquired => _reason is null;

        public override IEnumerable<string> MetadataNames =>
            _reason is not null ? [MetadataName.ReasonPhrase.Name] : _lease is not null ? s_heldMetadata : [];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = _reason is not null
                ? metadataName == MetadataName.ReasonPhrase.Name ? _reason : null
                : _lease is null ? null
                : metadataName == LeaseLostMetadata.Name ? _lease.Lost
                : metadataName == FencingTokenMetadata.Name ? _lease.FencingToken
                : null;
            return metadata is not null;
        }

        public ValueTask DisposeAsync() => _lease?.ReleaseAsync() ?? default;

        // RateLimitLease.Dispose is synchronous: the release runs on; it throws only on misuse (see PostgresLease.ReleaseAsync).
        protected override void Dispose(bool disposing) => _ = DisposeAsync().AsTask();
    }
}
