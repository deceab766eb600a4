using System.Net;
using System.Reflection;
using System.Runtime.Versioning;
using AsyncIterTools;
using AsyncPrimitives;

namespace FanOut.Tests;

/// <summary>
/// The demo's pipeline end to end against the real in-process API on 127.0.0.1: the concurrency bound as the server
/// measures it, and every request accounted for exactly once.
/// </summary>
public sealed class FanOutPipelineTests
{
    private const int Count = 300;
    private const int Limit = 16;
    private const int Retries = 3;

    [Fact]
    public async Task RunAsync_AgainstFlakyServer_HitsTheLimitExactlyAndAccountsForEveryRequestOnce()
    {
        await using FlakyApiServer server = await FlakyApiServer.StartAsync(new FlakyApiOptions
        {
            // Long enough next to the client's turnaround between two calls (under a loaded CI machine too) that all
            // Limit calls are at the server at once at some moment; 300 × 20 ms / 16 ≈ 0.4 s.
            Latency = TimeSpan.FromMilliseconds(20),
            Jitter = TimeSpan.FromMilliseconds(5),
            ErrorRate = 0.05,
        });
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        var pipeline = new FanOutPipeline(http, Options());

        FanOutResult result = await pipeline.RunAsync();

        server.BaseAddress.Host.Should().Be("127.0.0.1");
        result.Cancelled.Should().BeFalse();
        server.PeakInFlight.Should().Be(Limit, "the server must see the limit reached and never exceeded");
        result.ClientPeakInFlight.Should().Be(Limit);
        server.InFlight.Should().Be(0);

        (result.Succeeded + result.Failed).Should().Be(Count);
        result.ConsumedPerId.Should().HaveCount(Count).And.OnlyContain(n => n == 1, "each id reaches the consumers exactly once");
        Enumerable.Range(0, Count).Select(server.HitsFor).Should()
            .OnlyContain(n => n >= 1 && n <= Retries + 1, "each id is requested once plus at most its retries");
        server.Requests.Should().Be(result.Attempts);
        server.Errors.Should().Be(result.Attempts - result.Succeeded, "every failed attempt is a 503 the server sent");
        result.Batches.Should().BeInRange((Count + 19) / 20, Count);
    }

    [Fact]
    public async Task RunAsync_WhenEveryCallFails_RetriesEachIdThenCountsItFailed()
    {
        await using FlakyApiServer server = await FlakyApiServer.StartAsync(new FlakyApiOptions
        {
            Latency = TimeSpan.FromMilliseconds(1),
            Jitter = TimeSpan.Zero,
            ErrorRate = 1,
        });
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        var pipeline = new FanOutPipeline(http, Options() with { Count = 40, Limit = 4 });

        FanOutResult result = await pipeline.RunAsync();

        result.Failed.Should().Be(40);
        result.Succeeded.Should().Be(0);
        result.Attempts.Should().Be(40 * (Retries + 1));
        Enumerable.Range(0, 40).Select(server.HitsFor).Should().OnlyContain(n => n == Retries + 1);
        result.ConsumedPerId.Should().OnlyContain(n => n == 1);
        server.PeakInFlight.Should().BeLessThanOrEqualTo(4);
    }

    /// <summary>FanOutOptions.Retries: a 5xx answer (like a transport error or a timeout) is retried, and so are 408
    /// Request Timeout (a timeout) and 429 Too Many Requests (the server may take it later); another 4xx answer would
    /// fail again, so it fails at once, counted as failed.</summary>
    [Theory]
    [InlineData(HttpStatusCode.NotFound, 1)]
    [InlineData(HttpStatusCode.BadRequest, 1)]
    [InlineData(HttpStatusCode.InternalServerError, Retries + 1)]
    [InlineData(HttpStatusCode.ServiceUnavailable, Retries + 1)]
    [InlineData(HttpStatusCode.RequestTimeout, Retries + 1)]
    [InlineData(HttpStatusCode.TooManyRequests, Retries + 1)]
    public async Task RunAsync_RetriesA5xx408Or429Answer_NotAnother4xxAnswer(HttpStatusCode status, int attempts)
    {
        var handler = new AnswerWith(status);
        using var http = new HttpClient(handler) { BaseAddress = new Uri("http://127.0.0.1:9/") };
        var pipeline = new FanOutPipeline(http, Options() with { Count = 5, Limit = 2 });

        FanOutResult result = await pipeline.RunAsync().WaitAsync(TestBound);

        result.Failed.Should().Be(5);
        result.Succeeded.Should().Be(0);
        result.Attempts.Should().Be(5 * attempts, $"an HTTP {(int)status} answer is called {attempts} time(s) with Retries = {Retries}");
        result.Retries.Should().Be(5 * (attempts - 1));
        handler.Calls.Should().Be(5 * attempts);
    }

    /// <summary>The pipeline's <c>ids</c>: each in [0, Count). One outside is bad input, not a worker's failure: the
    /// source fails with ArgumentOutOfRangeException naming <c>ids</c>, and that id is never called.</summary>
    [Fact]
    public async Task RunAsync_AnIdOutsideTheRange_FailsNamingIds_BeforeItIsCalled()
    {
        await using FlakyApiServer server = await InstantServerAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        var pipeline = new FanOutPipeline(http, Options() with { Count = 3, Limit = 2 }, ids: new[] { 0, 1, 7 }.ToAsyncEnumerable());

        (await FluentActions.Awaiting(() => pipeline.RunAsync().WaitAsync(TestBound)).Should().ThrowAsync<ArgumentOutOfRangeException>())
            .Which.ParamName.Should().Be("ids");
        server.HitsFor(7).Should().Be(0, "an id outside the range is not called");
        pipeline.Snapshot().InFlight.Should().Be(0);
    }

    [Fact]
    public async Task RunAsync_WhenCancelled_StartsNothingNewAndLosesNothingStarted()
    {
        await using FlakyApiServer server = await FlakyApiServer.StartAsync(new FlakyApiOptions
        {
            Latency = TimeSpan.FromMilliseconds(5),
            Jitter = TimeSpan.Zero,
            ErrorRate = 0,
        });
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var cts = new CancellationTokenSource();
        var pipeline = new FanOutPipeline(http, Options() with { Count = 10_000 }, processBatch: (_, _) =>
        {
            cts.Cancel(); // the first batch a consumer sees stops the run
            return ValueTask.CompletedTask;
        });

        FanOutResult result = await pipeline.RunAsync(cts.Token);

        result.Cancelled.Should().BeTrue();
        result.Consumed.Should().BeGreaterThanOrEqualTo(1).And.BeLessThan(10_000);
        result.ConsumedPerId.Should().OnlyContain(n => n == 0 || n == 1);
        result.ConsumedPerId.Sum().Should().Be(result.Consumed);
        Enumerable.Range(0, 10_000).Where(id => result.ConsumedPerId[id] != (server.HitsFor(id) > 0 ? 1 : 0)).Should()
            .BeEmpty("every request the server saw reached the consumers, and no other");
        result.Attempts.Should().Be((int)server.Requests);
        result.ClientPeakInFlight.Should().BeLessThanOrEqualTo(Limit);
        server.PeakInFlight.Should().BeLessThanOrEqualTo(Limit);
    }

    [Theory]
    [InlineData(1, 1, 1)]   // the only worker fails at its first batch while the producer waits to put
    [InlineData(4, 8, 4)]   // every worker fails once (a brief outage of what processes the batches)
    public async Task RunAsync_WhenProcessingABatchFails_EndsWithThatFailure(int workers, int queueCapacity, int failures)
    {
        await using FlakyApiServer server = await InstantServerAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        int calls = 0;
        var pipeline = new FanOutPipeline(http, Options() with { Count = 1_000, BatchSize = 10, Workers = workers, QueueCapacity = queueCapacity }, processBatch: (_, _) =>
            Interlocked.Increment(ref calls) <= failures
                ? ValueTask.FromException(new InvalidDataException("the store is down"))
                : ValueTask.CompletedTask);

        await FluentActions.Awaiting(() => pipeline.RunAsync().WaitAsync(TestBound)).Should().ThrowAsync<InvalidDataException>(
            "a batch the workers could not process ends the run with that failure instead of leaving it waiting");
        pipeline.Snapshot().InFlight.Should().Be(0, "no call is left running");
    }

    [Fact]
    public async Task RunAsync_WhenProcessingABatchFailsWhileTheIdsSourceWaits_CancelsThatWaitAndEndsWithTheFailure()
    {
        await using FlakyApiServer server = await InstantServerAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        bool sourceSawTheFailure = false;

        // Five ids, then a wait for the next (a get on a shared queue that is not shut down) that only a cancellation ends.
        async IAsyncEnumerable<int> Ids([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
        {
            for (int i = 0; i < 5; i++)
            {
                yield return i;
            }

            try
            {
                await UntilCancelledAsync(ct);
            }
            finally
            {
                sourceSawTheFailure = true;
            }
        }

        var pipeline = new FanOutPipeline(http, Options() with { Count = 5 }, processBatch: (_, _) =>
            ValueTask.FromException(new InvalidDataException("the store is down")), ids: Ids());

        await FluentActions.Awaiting(() => pipeline.RunAsync().WaitAsync(TestBound)).Should().ThrowAsync<InvalidDataException>();
        sourceSawTheFailure.Should().BeTrue("a failing worker stops the production, the source's wait included");
    }

    /// <summary>
    /// From the handler's failure on, no answer comes back (the calls still out are held until the pipeline cancels
    /// them), so no slot of the limit frees but those of answers already on their way back: at most one request per
    /// slot may start after the failure, and none once the failure has stopped the production.
    /// </summary>
    [Fact]
    public async Task RunAsync_WhenProcessingABatchFails_StartsNoNewRequest()
    {
        await using FlakyApiServer server = await InstantServerAsync();
        using var client = new HoldingAnswers();
        using var http = new HttpClient(client) { BaseAddress = server.BaseAddress };
        long startedAtTheFailure = -1;
        var pipeline = new FanOutPipeline(http, Options() with { Count = 1_000, Limit = 8, BatchSize = 200, BatchDelay = TimeSpan.FromSeconds(30), Workers = 1, QueueCapacity = 1 }, processBatch: (_, _) =>
        {
            client.Hold();
            Interlocked.CompareExchange(ref startedAtTheFailure, client.Started, -1);
            return ValueTask.FromException(new InvalidDataException("the store is down"));
        });

        await FluentActions.Awaiting(() => pipeline.RunAsync().WaitAsync(TestBound)).Should().ThrowAsync<InvalidDataException>();
        (client.Started - startedAtTheFailure).Should().BeLessThanOrEqualTo(8, "after the failure, a request starts only in a slot an answer already back freed, each once");
    }

    [Fact]
    public async Task RunAsync_WhenTwoWorkersFail_EndsWithTheFirstFailure()
    {
        await using FlakyApiServer server = await InstantServerAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        var bothIn = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var productionStopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        // Both ids, then no end: the production stops only when a failing worker stops it, after it has recorded its
        // failure as the run's first. (A gate set by the first worker just before it throws would let the other
        // worker's failure, resumed on another thread, be recorded first.)
        async IAsyncEnumerable<int> Ids([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
        {
            yield return 0;
            yield return 1;
            try
            {
                await UntilCancelledAsync(ct);
            }
            finally
            {
                productionStopped.TrySetResult();
            }
        }

        int entered = 0;
        var pipeline = new FanOutPipeline(http, Options() with { Count = 2, Limit = 2, BatchSize = 1, Workers = 2 }, ids: Ids(), processBatch: async (_, _) =>
        {
            int n = Interlocked.Increment(ref entered);
            if (n == 2)
            {
                bothIn.TrySetResult();
            }

            await bothIn.Task;
            if (n == 2)
            {
                throw new InvalidDataException("first"); // the worker that took the second batch fails first
            }

            await productionStopped.Task;
            throw new InvalidOperationException("second");
        });

        (await FluentActions.Awaiting(() => pipeline.RunAsync().WaitAsync(TestBound)).Should().ThrowAsync<InvalidDataException>())
            .WithMessage("first");
    }

    [Fact]
    public async Task RunAsync_WhenTheIdsSourceFailsWithAQueuesShutdown_EndsWithThatFailure()
    {
        await using FlakyApiServer server = await InstantServerAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        var shared = new AsyncQueue<int>();
        for (int i = 0; i < 10; i++)
        {
            await shared.PutAsync(i);
        }

        async IAsyncEnumerable<int> Ids([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
        {
            yield return await shared.GetAsync(ct);
            yield return await shared.GetAsync(ct);
            shared.Shutdown(immediate: true); // someone else drops the rest
            yield return await shared.GetAsync(ct); // QueueShutDownException: the pipeline's own queue is not involved
        }

        var pipeline = new FanOutPipeline(http, Options() with { Count = 10 }, ids: Ids());

        await FluentActions.Awaiting(() => pipeline.RunAsync().WaitAsync(TestBound)).Should().ThrowAsync<QueueShutDownException>();
    }

    [Fact]
    public async Task RunAsync_StoppedWhileTheIdsSourceWaits_CancelsThatWaitAndCallsEveryIdItHandedOut()
    {
        await using FlakyApiServer server = await InstantServerAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var stop = new CancellationTokenSource();
        var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var afterTheStop = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        bool sourceSawTheStop = false;

        // Three ids at once, then a wait for the next (a get on an empty queue) that the stop must reach.
        async IAsyncEnumerable<int> Ids([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
        {
            yield return 0;
            yield return 1;
            yield return 2;
            waiting.TrySetResult();
            var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using (ct.Register(() => cancelled.TrySetResult()))
            {
                await Task.WhenAny(cancelled.Task, afterTheStop.Task);
            }

            sourceSawTheStop = ct.IsCancellationRequested;
            ct.ThrowIfCancellationRequested();
            yield return await afterTheStop.Task;
        }

        var pipeline = new FanOutPipeline(http, Options() with { Count = 10 }, ids: Ids());
        Task<FanOutResult> run = pipeline.RunAsync(stop.Token);
        await waiting.Task.WaitAsync(TestBound);

        stop.Cancel();
        FanOutResult result = await run.WaitAsync(TestBound);

        sourceSawTheStop.Should().BeTrue("the stop cancels the source's wait for its next id");
        result.Cancelled.Should().BeTrue();
        result.ConsumedPerId.Take(3).Should().Equal(1, 1, 1);
        result.ConsumedPerId.Skip(3).Should().OnlyContain(n => n == 0);
    }

    [Fact]
    public async Task RunAsync_StoppedAfterTheLastIdWasTaken_IsNotReportedAsStoppedEarly()
    {
        await using FlakyApiServer server = await InstantServerAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var stop = new CancellationTokenSource();
        int consumed = 0;
        var pipeline = new FanOutPipeline(http, Options() with { Count = 20, BatchSize = 1 }, processBatch: (batch, _) =>
        {
            if (Interlocked.Add(ref consumed, batch.Length) == 20)
            {
                stop.Cancel(); // every id has been taken, called and consumed: nothing is left to stop
            }

            return ValueTask.CompletedTask;
        });

        FanOutResult result = await pipeline.RunAsync(stop.Token).WaitAsync(TestBound);

        result.Consumed.Should().Be(20);
        result.Cancelled.Should().BeFalse("the run made every request; the stop left nothing out");
    }

    [Fact]
    public async Task RunAsync_StoppedPartWay_IsReportedAsStoppedEarly()
    {
        await using FlakyApiServer server = await InstantServerAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var stop = new CancellationTokenSource();
        var pipeline = new FanOutPipeline(http, Options() with { Count = 10_000, Limit = 2 }, ids: StopAfter(AsyncEnumerable.Range(0, 10_000), 5, stop));

        FanOutResult result = await pipeline.RunAsync(stop.Token).WaitAsync(TestBound);

        result.Cancelled.Should().BeTrue();
        // Ids 0-4, and 5: the source handed it out in the same move that stopped the run, so it is called, not lost.
        result.Consumed.Should().Be(6);
        result.ConsumedPerId.Take(6).Should().OnlyContain(n => n == 1);

        static async IAsyncEnumerable<int> StopAfter(IAsyncEnumerable<int> ids, int count, CancellationTokenSource stop)
        {
            await foreach (int id in ids)
            {
                yield return id;
                if (id + 1 == count)
                {
                    stop.Cancel();
                }
            }
        }
    }

    [Fact]
    public async Task RunAsync_SecondCall_Throws()
    {
        using var http = new HttpClient { BaseAddress = new Uri("http://127.0.0.1:9/") };
        var pipeline = new FanOutPipeline(http, Options() with { Count = 0 });
        (await pipeline.RunAsync()).Consumed.Should().Be(0);

        await FluentActions.Awaiting(() => pipeline.RunAsync()).Should().ThrowAsync<InvalidOperationException>();
    }

    [Fact]
    public void Options_BadValues_ThrowNamingTheValue()
    {
        using var http = new HttpClient();
        FluentActions.Invoking(() => new FanOutPipeline(http, Options() with { Limit = 0 }))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("Limit");
        FluentActions.Invoking(() => new FlakyApiOptions { ErrorRate = 1.5 }.Validate())
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("ErrorRate");
    }

    [Fact]
    public void Demo_UsesTheLibraryAssetUnderTest()
    {
        string expected = typeof(FanOutPipelineTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "LibraryTargetFramework").Value!;
        string version = expected == "netstandard2.0" ? ".NETStandard,Version=v2.0" : ".NETCoreApp,Version=v10.0";

        foreach (Assembly library in new[] { typeof(AsyncIter).Assembly, typeof(AsyncQueue<>).Assembly })
        {
            library.GetCustomAttribute<TargetFrameworkAttribute>()!.FrameworkName.Should().Be(version);
        }
    }

    private static readonly TimeSpan TestBound = TimeSpan.FromSeconds(20);

    /// <summary>The in-process API answering every call at once, successfully.</summary>
    private static Task<FlakyApiServer> InstantServerAsync() =>
        FlakyApiServer.StartAsync(new FlakyApiOptions { Latency = TimeSpan.Zero, Jitter = TimeSpan.Zero, ErrorRate = 0 });

    /// <summary>A handler that answers every call with <paramref name="status"/>, and counts the calls.</summary>
    private sealed class AnswerWith(HttpStatusCode status) : HttpMessageHandler
    {
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _calls);
            return Task.FromResult(new HttpResponseMessage(status) { RequestMessage = request });
        }
    }

    /// <summary>Completes, as cancelled, only when <paramref name="cancellationToken"/> is cancelled.</summary>
    private static Task UntilCancelledAsync(CancellationToken cancellationToken) =>
        new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously).Task.WaitAsync(cancellationToken);

    /// <summary>Sends calls to the server and counts them; once <see cref="Hold"/> is called, holds every answer until
    /// its call is cancelled, so that no call ends after that moment.</summary>
    private sealed class HoldingAnswers() : DelegatingHandler(new SocketsHttpHandler())
    {
        private long _started;
        private volatile bool _holding;

        public long Started => Interlocked.Read(ref _started);

        public void Hold() => _holding = true;

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _started);
            HttpResponseMessage answer = await base.SendAsync(request, cancellationToken);
            if (_holding)
            {
                answer.Dispose();
                await UntilCancelledAsync(cancellationToken); // until the pipeline cancels the call
            }

            return answer;
        }
    }

    private static FanOutOptions Options() => new()
    {
        Count = Count,
        Limit = Limit,
        Retries = Retries,
        RetryBackoff = TimeSpan.Zero,
        BatchSize = 20,
        BatchDelay = TimeSpan.FromMilliseconds(50),
        Workers = 3,
        QueueCapacity = 4,
    };
}
