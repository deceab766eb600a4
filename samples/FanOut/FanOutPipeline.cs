using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.ExceptionServices;
using System.Threading.RateLimiting;
using AsyncIterTools;
using AsyncPrimitives;

namespace FanOut;

/// <summary>
/// The demo's pipeline: request ids fan out to HTTP calls with <see cref="AsyncIter.MapUnordered{T, TResult}"/> (at most
/// <see cref="FanOutOptions.Limit"/> in flight, each retried up to <see cref="FanOutOptions.Retries"/> times after a 5xx,
/// 408 or 429 answer, a transport error or a timeout), the
/// results are grouped with <see cref="AsyncIter.Batch{T}(IAsyncEnumerable{T}, int, TimeSpan, TimeProvider?)"/>, and the
/// batches go through a bounded <see cref="AsyncQueue{T}"/> to consumer workers that mark each one done
/// (<c>TaskDone</c>/<c>JoinAsync</c>, then <c>Shutdown</c> ends the workers). With a <see cref="RateLimiter"/>, each
/// request (with its retries) also holds one of its permits, on top of the local limit: a <c>PostgresSemaphore</c>'s
/// limiter makes the limit global across processes, as each instance of the scale-out demo does (<see cref="ScaleOutWorker"/>).
/// </summary>
/// <remarks>
/// A run is single-use. <see cref="Snapshot"/> may be called from any thread while it runs. Cancelling the token is a
/// graceful stop: no new request starts (a source of ids waiting for its next one is cancelled, and an id it handed out
/// is still called), the calls in flight finish (with their retries), their results go through the batches and the
/// queue to the workers, and the run returns what was done (<see cref="FanOutResult.Cancelled"/>) instead of throwing.
/// Nothing started is lost. A failure ends the run: of the ids source, once the workers have processed what was
/// handed off; of <c>processBatch</c>, at once (no new request starts, the calls in flight are cancelled, the batches
/// still queued are dropped). <see cref="RunAsync"/> then throws it (the first, if several workers fail).
/// </remarks>
public sealed class FanOutPipeline
{
    private readonly HttpClient _client;
    private readonly FanOutOptions _options;
    private readonly TimeProvider _time;

    /// <summary>The request ids to call, or null for 0 .. Count-1 in order.</summary>
    private readonly IAsyncEnumerable<int>? _ids;

    /// <summary>The permits each request holds while it runs, on top of the local limit, or null.</summary>
    private readonly RateLimiter? _limiter;

    /// <summary>The consumers' work per batch (after counting it), or null.</summary>
    private readonly Func<CallResult[], CancellationToken, ValueTask>? _processBatch;

    /// <summary>Latency of every HTTP call made, in milliseconds.</summary>
    private readonly ConcurrentQueue<double> _latencies = new();

    /// <summary>How many times the consumers saw each id (index = id).</summary>
    private readonly int[] _consumedPerId;

    // Live counters, written with Interlocked by the calls and the workers, read by Snapshot.
    private int _succeeded;
    private int _failed;
    private int _retries;
    private int _attempts;
    private int _inFlight;
    private int _peakInFlight;
    private int _consumed;
    private int _consumedSucceeded;
    private int _batches;
    private long _startTimestamp;
    private int _started;

    /// <summary>The first failure of <see cref="_processBatch"/>, or null.</summary>
    private ExceptionDispatchInfo? _workerFailure;

    /// <summary>Creates a pipeline that calls the API at <paramref name="client"/>'s base address.</summary>
    /// <param name="client">The HTTP client; its handler should not limit connections, so the bound is the pipeline's.</param>
    /// <param name="options">What to run.</param>
    /// <param name="processBatch">What a consumer worker does with each batch, e.g. store it; null for nothing. It gets
    /// no token from the run: every result is processed, also after a stop. If it throws, the run stops at once (no new
    /// request starts, the calls in flight are cancelled, the batches still queued are dropped) and
    /// <see cref="RunAsync"/> throws that exception.</param>
    /// <param name="timeProvider">The clock for timings, batch deadlines and retry backoff.</param>
    /// <param name="ids">The request ids to call, each in [0, <see cref="FanOutOptions.Count"/>), pulled only as a call
    /// slot frees up (e.g. deliveries of a shared queue); null for 0 .. Count-1 in order. An id outside that range fails
    /// the source with <see cref="ArgumentOutOfRangeException"/> (<c>ParamName</c> "ids") before it is called: the run
    /// ends as on any failure of the source.</param>
    /// <param name="limiter">A limit on top of <see cref="FanOutOptions.Limit"/>: each request acquires one permit before
    /// its first attempt and holds it until its last attempt ends; null for none.</param>
    public FanOutPipeline(
        HttpClient client,
        FanOutOptions options,
        Func<CallResult[], CancellationToken, ValueTask>? processBatch = null,
        TimeProvider? timeProvider = null,
        IAsyncEnumerable<int>? ids = null,
        RateLimiter? limiter = null)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _client = client;
        _options = options;
        _time = timeProvider ?? TimeProvider.System;
        _processBatch = processBatch;
        _ids = ids;
        _limiter = limiter;
        _consumedPerId = new int[options.Count];
    }

    /// <summary>The counters right now.</summary>
    public FanOutSnapshot Snapshot()
    {
        long start = Interlocked.Read(ref _startTimestamp);
        return new FanOutSnapshot(
            _options.Count,
            Volatile.Read(ref _succeeded),
            Volatile.Read(ref _failed),
            Volatile.Read(ref _retries),
            Volatile.Read(ref _inFlight),
            Volatile.Read(ref _consumed),
            start == 0 ? TimeSpan.Zero : _time.GetElapsedTime(start));
    }

    /// <summary>Makes every request, hands the batched results to the workers, and waits until they processed them.</summary>
    /// <param name="cancellationToken">Stops the run early and gracefully; the result then reports what was done.</param>
    /// <exception cref="InvalidOperationException">The pipeline was already run.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id of the <c>ids</c> source is outside [0, Count) (<c>ParamName</c>
    /// "ids"); it is not called, and the run ends as on any failure of the source: the calls still in flight are
    /// cancelled, and only the results already handed to the workers are processed.</exception>
    /// <remarks>The first failure of <c>processBatch</c>, else the ids source's failure, is thrown once every worker has
    /// ended.</remarks>
    public async Task<FanOutResult> RunAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("A FanOutPipeline runs once.");
        }

        Interlocked.Exchange(ref _startTimestamp, _time.GetTimestamp());
        var queue = new AsyncQueue<CallResult[]>(maxSize: _options.QueueCapacity);
        using var abort = new CancellationTokenSource(); // a worker's failure stops the production
        Task[] workers = Enumerable.Range(0, _options.Workers).Select(_ => Task.Run(() => ConsumeAsync(queue, abort))).ToArray();

        // A stop ends the source instead of cancelling the calls: no new request starts, the ones in flight finish and
        // flow through Batch and the queue like any other, so everything that was started is accounted for.
        var ids = new IdsUntilStopped(_ids ?? AsyncEnumerable.Range(0, _options.Count), _options.Count, cancellationToken);

        // At most Limit calls in flight; with a limiter, each request also holds one of its leases from before its first
        // attempt until its last attempt ends.
        IAsyncEnumerable<CallResult> results = _limiter is null
            ? ids.MapUnordered(CallWithRetriesAsync, maxConcurrency: _options.Limit)
            : ids.MapUnordered(CallWithRetriesAsync, maxConcurrency: _options.Limit, _limiter, _time);
        IAsyncEnumerable<CallResult[]> batches = results
            .Batch(_options.BatchSize, _options.BatchDelay, _time); // full, or BatchDelay after its first result

        ExceptionDispatchInfo? sourceFailure = null;
        try
        {
            // Cancelled only by a failing worker: the calls in flight are cancelled and the source's wait ends.
            await foreach (CallResult[] batch in batches.WithCancellation(abort.Token))
            {
                await queue.PutAsync(batch); // waits while QueueCapacity batches are queued (back-pressure)
            }

            await queue.JoinAsync(); // every batch handed off has been processed (TaskDone)
        }
        catch (Exception) when (abort.IsCancellationRequested)
        {
            // A worker failed, stopped the production and shut the queue down: its failure is thrown below.
        }
        catch (Exception ex)
        {
            sourceFailure = ExceptionDispatchInfo.Capture(ex); // thrown once the workers have processed what was handed off
        }

        queue.Shutdown(); // the workers' loops end once the queue is empty
        await Task.WhenAll(workers);
        (Volatile.Read(ref _workerFailure) ?? sourceFailure)?.Throw();

        TimeSpan wallTime = _time.GetElapsedTime(_startTimestamp);
        double[] latencies = [.. _latencies];
        Array.Sort(latencies);
        int consumed = Volatile.Read(ref _consumed);
        int consumedSucceeded = Volatile.Read(ref _consumedSucceeded);
        return new FanOutResult
        {
            Requested = _options.Count,
            Succeeded = consumedSucceeded,
            Failed = consumed - consumedSucceeded,
            Attempts = Volatile.Read(ref _attempts),
            Batches = Volatile.Read(ref _batches),
            ClientPeakInFlight = Volatile.Read(ref _peakInFlight),
            WallTime = wallTime,
            P50 = Percentile(latencies, 0.50),
            P99 = Percentile(latencies, 0.99),
            Cancelled = ids.Stopped && (_ids is not null || ids.Taken < _options.Count), // an id was left out
            Retries = Volatile.Read(ref _retries),
            ConsumedPerId = _consumedPerId,
        };
    }

    /// <summary>One worker: takes batches until the queue is shut down and empty, marking each one done. If
    /// <c>processBatch</c> throws, it records the run's first failure, stops the production (<paramref name="abort"/>)
    /// and shuts the queue down at once (the producer and the other workers stop waiting), and ends.</summary>
    private async Task ConsumeAsync(AsyncQueue<CallResult[]> queue, CancellationTokenSource abort)
    {
        await foreach (CallResult[] batch in queue)
        {
            try
            {
                foreach (CallResult result in batch)
                {
                    Interlocked.Increment(ref _consumedPerId[result.Id]);
                    if (result.Succeeded)
                    {
                        Interlocked.Increment(ref _consumedSucceeded);
                    }
                }

                Interlocked.Increment(ref _batches);
                Interlocked.Add(ref _consumed, batch.Length);
                if (_processBatch is not null)
                {
                    await _processBatch(batch, CancellationToken.None);
                }
            }
            catch (Exception ex)
            {
                Interlocked.CompareExchange(ref _workerFailure, ExceptionDispatchInfo.Capture(ex), null);
                abort.Cancel();
                queue.Shutdown(immediate: true);
                return;
            }
            finally
            {
                queue.TaskDone();
            }
        }
    }

    /// <summary>Calls the API for <paramref name="id"/>, retrying an attempt that may succeed when tried again (a 5xx,
    /// 408 or 429 answer, a transport error, a timeout); another failure (another 4xx answer) ends it at once. A request
    /// that fails is a failed result, not an exception (so one bad id does not stop the fan-out). Only cancellation
    /// throws.</summary>
    private async ValueTask<CallResult> CallWithRetriesAsync(int id, CancellationToken cancellationToken)
    {
        long start = _time.GetTimestamp();
        for (int attempt = 1; ; attempt++)
        {
            (string? error, bool transient) = await CallOnceAsync(id, attempt, cancellationToken);
            if (error is null)
            {
                Interlocked.Increment(ref _succeeded);
                return new CallResult(id, true, attempt, _time.GetElapsedTime(start), null);
            }

            if (!transient || attempt > _options.Retries)
            {
                Interlocked.Increment(ref _failed);
                return new CallResult(id, false, attempt, _time.GetElapsedTime(start), error);
            }

            Interlocked.Increment(ref _retries);
            if (_options.RetryBackoff > TimeSpan.Zero)
            {
                await Task.Delay(_options.RetryBackoff * attempt, _time, cancellationToken);
            }
        }
    }

    /// <summary>One HTTP call: no error on success, else why it failed and whether trying again may succeed (a 5xx, 408
    /// Request Timeout or 429 Too Many Requests answer, a transport error or a timeout may; another 4xx answer, or any
    /// other that is not 2xx, will not).</summary>
    private async ValueTask<(string? Error, bool Transient)> CallOnceAsync(int id, int attempt, CancellationToken cancellationToken)
    {
        UpdatePeak(Interlocked.Increment(ref _inFlight));
        Interlocked.Increment(ref _attempts);
        long start = _time.GetTimestamp();
        try
        {
            string path = string.Create(CultureInfo.InvariantCulture, $"items/{id}?attempt={attempt}");
            using HttpResponseMessage response = await _client.GetAsync(path, cancellationToken);
            int status = (int)response.StatusCode;
            return response.IsSuccessStatusCode ? (null, false) : ($"HTTP {status}", status >= 500 || status is 408 or 429);
        }
        catch (HttpRequestException e)
        {
            return (e.Message, true);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return ("timed out", true); // HttpClient.Timeout, not ours
        }
        finally
        {
            _latencies.Enqueue(_time.GetElapsedTime(start).TotalMilliseconds);
            Interlocked.Decrement(ref _inFlight);
        }
    }

    private void UpdatePeak(int current)
    {
        int peak = Volatile.Read(ref _peakInFlight);
        while (current > peak)
        {
            int seen = Interlocked.CompareExchange(ref _peakInFlight, current, peak);
            if (seen == peak)
            {
                return;
            }

            peak = seen;
        }
    }

    /// <summary>Nearest-rank percentile of sorted milliseconds.</summary>
    private static TimeSpan Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? TimeSpan.Zero : TimeSpan.FromMilliseconds(sorted[Math.Max(0, (int)Math.Ceiling(p * sorted.Length) - 1)]);

    /// <summary>
    /// The ids until a stop: the source is read with the stop's token, so a source waiting for its next id (a get on an
    /// empty queue) is cancelled, and ends without an exception; an id already handed out is still yielded (it is called,
    /// not lost). <see cref="Stopped"/>: whether the stop ended it before the source did. An id outside [0,
    /// <paramref name="count"/>) fails it (<see cref="ArgumentOutOfRangeException"/> naming <c>ids</c>) before it is handed out.
    /// </summary>
    private sealed class IdsUntilStopped(IAsyncEnumerable<int> source, int count, CancellationToken stop) : IAsyncEnumerable<int>
    {
        private int _taken;
        private volatile bool _stopped;

        public bool Stopped => _stopped;

        public int Taken => Volatile.Read(ref _taken);

        public async IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(stop, cancellationToken);
            await using IAsyncEnumerator<int> ids = source.GetAsyncEnumerator(linked.Token);
            while (true)
            {
                if (stop.IsCancellationRequested)
                {
                    _stopped = true;
                    yield break;
                }

                bool more;
                try
                {
                    more = await ids.MoveNextAsync();
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                {
                    _stopped = true; // the stop interrupted a wait for the next id: nothing was taken
                    yield break;
                }

                if (!more)
                {
                    yield break;
                }

                int id = ids.Current;
                if ((uint)id >= (uint)count)
                {
                    throw new ArgumentOutOfRangeException(
                        "ids", id, string.Create(CultureInfo.InvariantCulture, $"A request id must be in [0, {count}) (Count)."));
                }

                Interlocked.Increment(ref _taken);
                yield return id;
            }
        }
    }
}
