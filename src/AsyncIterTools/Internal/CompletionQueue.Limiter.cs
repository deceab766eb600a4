using System.Threading.RateLimiting;

namespace AsyncIterTools.Internal;

/// <content>The limiter: a call of an operator's <c>RateLimiter</c> overload holds a lease while it runs.</content>
internal sealed partial class CompletionQueue<TArg, TResult>
{
    /// <summary>Runs one call while holding a lease of <see cref="_limiter"/>, acquired first and disposed however the call ends.</summary>
    /// <remarks>
    /// The wait for the lease keeps the caller's context: the call after it is user code, and runs on the context it
    /// would have run on without a limiter (the csproj's context policy). What follows the call (disposing the lease,
    /// completing the operation) is bookkeeping, and never posts to it.
    /// </remarks>
    private async ValueTask<TResult> CallWithLeaseAsync(Operation operation, TArg arg, CancellationToken cancellationToken)
    {
        RateLimitLease lease;
        ExceptionDispatchInfo? refusal;
        try
        {
            (lease, refusal) = await AcquireLeaseAsync(operation, cancellationToken);
        }
        catch (Exception) when (operation.LimiterFailed)
        {
            _stopped = true; // the limiter failed: the operator fails as a whole
            throw;
        }

        if (refusal is not null)
        {
            // Refused without a RetryAfter, or the lease could not tell whether it was granted: the operator fails as a
            // whole, decided now, not once the lease is back. The lease is given back as every lease is, as bookkeeping,
            // off the caller's context.
            MarkLimiterFailed(operation);
            await ReleaseAfterFailureAsync(lease).ConfigureAwait(false);
            refusal.Throw();
        }

        if (_stopped)
        {
            // Granted after another call failed, which its consumer may not have taken yet: the call does not start, and
            // ends once a failure has been posted, so that it never comes out ahead of the failure (also when its lease's
            // release fails), and still ends when the consumer walks away without taking it.
            ExceptionDispatchInfo? releaseFailure = null;
            try
            {
                await ReleaseAsync(lease).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                releaseFailure = ExceptionDispatchInfo.Capture(ex);
            }

            await _failurePosted!.Task.ConfigureAwait(false);
            releaseFailure?.Throw();
            throw new OperationCanceledException("Not started: another call of the operator failed.", cancellationToken);
        }

        TResult result;
        try
        {
            // Granted after the operator was cancelled: start nothing new (the lease goes back at once).
            cancellationToken.ThrowIfCancellationRequested();
            result = await CallHoldingAsync(lease, arg, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Decided now, not once the lease is back (a round trip, for some): whether the call ended before the calls
            // were cancelled; and, before the lease goes back, that nothing granted after it starts (a limiter may hand
            // the permit straight on).
            MarkEnded(operation);
            if (_stopsAtFailure)
            {
                _stopped = true;
            }

            // A lease whose release takes time (a PostgresSemaphore's goes back to the server) is awaited: the call ends,
            // and the operator with it, only once its permit is back.
            await ReleaseAfterFailureAsync(lease).ConfigureAwait(false);
            throw;
        }

        MarkEnded(operation);
        try
        {
            await ReleaseAsync(lease).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The limiter failed, not the call: the operator fails as a whole, as when the limiter throws at an acquire
            // (and, as then, a failure after the calls were cancelled is taken for the cancellation's doing).
            MarkLimiterFailed(operation);
            throw;
        }

        return result;
    }

    /// <summary>Marks <paramref name="operation"/> failed by the limiter (a refusal, or a release that failed after its
    /// call succeeded), as it happens: the operator fails as a whole and starts nothing more, and whether that came before
    /// the calls were cancelled is decided now, not once its lease is back.</summary>
    private void MarkLimiterFailed(Operation operation)
    {
        operation.LimiterFailed = true;
        MarkEnded(operation);
        _stopped = true;
    }

    /// <summary>
    /// Records that <paramref name="operation"/>'s call has ended (or failed by the limiter) as of now, before its lease
    /// goes back: whether the calls were cancelled yet is decided now, and until the operation is posted it counts in
    /// <see cref="_endedUnposted"/>, stamped in the order calls end, so that a failure of the inputs read meanwhile is
    /// delivered after it (<see cref="Post"/>). A later mark (a release that failed after the call succeeded) decides again.
    /// </summary>
    private void MarkEnded(Operation operation)
    {
        bool before = !IsCancelled;
        lock (_lock)
        {
            if (operation.EndedBeforeCancel is null)
            {
                operation.EndStamp = ++_endStamps;
                _endedUnposted++;
            }

            operation.EndedBeforeCancel = before;
        }
    }

    /// <summary>Gives back the lease of a call that failed already (or was refused): that failure came first and wins
    /// (docs/asynciter.md, "the first failure wins"), so a failure of the release is dropped.</summary>
    private static async ValueTask ReleaseAfterFailureAsync(RateLimitLease lease)
    {
        try
        {
            await ReleaseAsync(lease).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Dropped: the later of two failures.
        }
    }

    private static ValueTask ReleaseAsync(RateLimitLease lease)
    {
        if (lease is IAsyncDisposable releasing)
        {
            return releasing.DisposeAsync();
        }

        lease.Dispose();
        return default;
    }

    /// <summary>
    /// Runs the call under <paramref name="lease"/>. A lease that can be lost carries a token under
    /// <see cref="LeaseMetadata.Lost"/>, cancelled once the limiter no longer counts its permit as held (a
    /// <c>PostgresSemaphore</c>'s, when its session ends): the call's token is cancelled with it, and a call that then
    /// fails (while the operator was not cancelled) fails with <see cref="InvalidOperationException"/> saying so.
    /// </summary>
    private ValueTask<TResult> CallHoldingAsync(RateLimitLease lease, TArg arg, CancellationToken cancellationToken) =>
        lease.TryGetMetadata(LeaseMetadata.Lost, out CancellationToken lost) && lost.CanBeCanceled
            ? CallUntilLostAsync(lost, arg, cancellationToken)
            : _call(arg, cancellationToken);

    private async ValueTask<TResult> CallUntilLostAsync(CancellationToken lost, TArg arg, CancellationToken cancellationToken)
    {
        if (lost.IsCancellationRequested)
        {
            // Lost between the grant and the start: the call never starts without its permit.
            throw new InvalidOperationException(
                $"The lease of the rate limiter {_limiter} was lost before the call started (its permit may be held by another now); the call did not start.");
        }

        using CancellationTokenSource linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, lost);
        try
        {
            return await _call(arg, linked.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (lost.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new InvalidOperationException(
                $"The lease of the rate limiter {_limiter} was lost while the call ran (its permit may be held by another now); the call's token was cancelled.", ex);
        }
    }

    /// <summary>The shortest wait after a refusal: what a <c>RetryAfter</c> of zero or less means.</summary>
    private static readonly TimeSpan MinRetryAfter = TimeSpan.FromMilliseconds(1);

    /// <summary>The longest wait after a refusal: what a .NET timer takes (the limiter is then asked again).</summary>
    private static readonly TimeSpan MaxRetryAfter = TimeSpan.FromMilliseconds(TimeoutArgument.MaxMilliseconds);

    /// <summary>
    /// Acquires one lease of <see cref="_limiter"/>: a refusal with <c>RetryAfter</c> metadata is retried after that delay
    /// (on <see cref="_timeProvider"/>, between <see cref="MinRetryAfter"/> and <see cref="MaxRetryAfter"/>); one without
    /// it, or a lease that cannot tell whether it was granted, is returned with the refusal, for the caller to give back.
    /// A limiter that throws (or returns no lease) marks <paramref name="operation"/>'s limiter failed (not an outcome of
    /// its work, which never started) and throws.
    /// </summary>
    private async ValueTask<(RateLimitLease Lease, ExceptionDispatchInfo? Refusal)> AcquireLeaseAsync(Operation operation, CancellationToken cancellationToken)
    {
        RateLimiter limiter = _limiter!;
        try
        {
            while (true)
            {
                RateLimitLease lease = await limiter.AcquireAsync(1, cancellationToken)
                    ?? throw new InvalidOperationException($"The rate limiter {limiter} returned no lease (null); the work was not started.");
                TimeSpan retryAfter;
                try
                {
                    if (lease.IsAcquired)
                    {
                        return (lease, null);
                    }

                    if (!lease.TryGetMetadata(MetadataName.RetryAfter, out retryAfter))
                    {
                        string reason = lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? phrase) ? $" ({phrase})" : string.Empty;
                        throw new InvalidOperationException(
                            $"The rate limiter {limiter} refused a permit{reason} without a RetryAfter; the work was not started.");
                    }
                }
                catch (Exception ex)
                {
                    return (lease, ExceptionDispatchInfo.Capture(ex)); // given back by the caller
                }

                // Refused with a RetryAfter: given back (awaited, as every lease; its release failing is the limiter's
                // failure), then asked for again after the wait. The call follows, on the caller's context.
                await ReleaseAsync(lease);

                // At least a millisecond: a limiter that keeps refusing with a RetryAfter of zero must not spin the
                // thread. At most what a timer takes: a longer one (a monthly quota) is asked again then, and says what
                // is left.
                TimeSpan delay = retryAfter < MinRetryAfter ? MinRetryAfter : retryAfter > MaxRetryAfter ? MaxRetryAfter : retryAfter;
                await Compat.Delay(_timeProvider, delay, cancellationToken);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            operation.LimiterFailed = true;
            throw;
        }
    }
}

/// <summary>The lease metadata the limiter overloads read besides <see cref="MetadataName.RetryAfter"/>.</summary>
internal static class LeaseMetadata
{
    /// <summary><c>LEASE_LOST</c>: a token cancelled once the limiter no longer counts the lease's permit as held (docs/asynciter.md).</summary>
    public static readonly MetadataName<CancellationToken> Lost = MetadataName.Create<CancellationToken>("LEASE_LOST");
}
