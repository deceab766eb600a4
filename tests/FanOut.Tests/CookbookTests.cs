using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using AsyncIterTools;
using AsyncPrimitives;

namespace FanOut.Tests;

/// <summary>The recipes of docs/cookbook.md, run for real (HTTP ones against the in-process API on 127.0.0.1).</summary>
public sealed class CookbookTests
{
    [Fact]
    public async Task FanOut_MapKeepsOrderAndBound()
    {
        await using FlakyApiServer server = await StartServerAsync(errorRate: 0);
        using var http = new HttpClient { BaseAddress = server.BaseAddress };

        // doc: cookbook-fanout
        IAsyncEnumerable<int> ids = AsyncEnumerable.Range(0, 200);

        // At most 16 requests in flight; an id is read only when a slot frees up; results come in input order.
        IAsyncEnumerable<string> bodies = ids.Map(
            async (id, ct) => await http.GetStringAsync($"items/{id}", ct),
            maxConcurrency: 16);

        List<string> results = await bodies.ToListAsync();
        // end doc

        results.Should().HaveCount(200);
        results.Select((body, i) => body.Contains($"\"id\":{i},", StringComparison.Ordinal)).Should().OnlyContain(ok => ok);
        server.PeakInFlight.Should().BeInRange(1, 16);
    }

    [Fact]
    public async Task FanOut_SettledKeepsGoingPastFailures()
    {
        await using FlakyApiServer server = await StartServerAsync(errorRate: 0.2);
        using var http = new HttpClient { BaseAddress = server.BaseAddress };

        // doc: cookbook-fanout-settled
        IEnumerable<Func<CancellationToken, Task<string>>> calls = Enumerable.Range(0, 200)
            .Select(id => (Func<CancellationToken, Task<string>>)(ct => http.GetStringAsync($"items/{id}", ct)));

        // A failed call becomes a failed Outcome instead of stopping the rest (Python's return_exceptions=True).
        Outcome<string>[] outcomes = await AsyncIter.GatherSettledAsync(calls, maxConcurrency: 16);

        int failed = outcomes.Count(o => !o.IsSuccess);
        // end doc

        outcomes.Should().HaveCount(200);
        failed.Should().Be((int)server.Errors);
        outcomes.Where(o => !o.IsSuccess).Should().OnlyContain(o => o.Exception is HttpRequestException);
        server.PeakInFlight.Should().BeInRange(1, 16);
    }

    [Fact]
    public async Task Limiters_LocalBoundRateAndGlobalLimit()
    {
        await using FlakyApiServer server = await StartServerAsync(errorRate: 0);
        using var http = new HttpClient { BaseAddress = server.BaseAddress };

        // Stands in for coordinator.CreateSemaphore("partner-api", 48).AsRateLimiter(), shared by two "instances" that
        // would each run 32 calls at once: together they never have more than 48 in flight.
        using var global = new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = 48, QueueLimit = 1_000 });

        List<string>[] instances = await Task.WhenAll(
            FetchAllAsync(http, AsyncEnumerable.Range(0, 120), global),
            FetchAllAsync(http, AsyncEnumerable.Range(120, 120), global));

        instances.Sum(bodies => bodies.Count).Should().Be(240);
        server.PeakInFlight.Should().BeInRange(1, 48);
        global.GetStatistics()!.CurrentAvailablePermits.Should().Be(48, "every permit was given back");
    }

    // doc: cookbook-limiters
    /// <summary>
    /// Fetches every id with at most 32 calls in flight in this instance, 100 started per second by it after a burst of 100, and never
    /// more calls in flight across all instances than <paramref name="global"/> has permits.
    /// </summary>
    private static async Task<List<string>> FetchAllAsync(HttpClient http, IAsyncEnumerable<int> ids, RateLimiter global)
    {
        using var perSecond = new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
        {
            TokenLimit = 100,                              // a burst of at most 100,
            TokensPerPeriod = 100,
            ReplenishmentPeriod = TimeSpan.FromSeconds(1), // then 100 per second
            QueueLimit = 32,                               // each call in flight may wait for a token: none is refused
        });

        // The rate first: a call still waiting for its token holds none of the global permits the other instances need.
        using RateLimiter limiter = RateLimiter.CreateChained(perSecond, global);

        return await ids
            .MapUnordered(async (id, ct) => await http.GetStringAsync($"items/{id}", ct), maxConcurrency: 32, limiter)
            .ToListAsync();
    }
    // end doc

    [Theory]
    [InlineData(-1)] // every store succeeds
    [InlineData(50)] // the store of item 50 fails
    public async Task Stages_BoundedQueuesHoldTheProducerBack_AndAFailingStageStopsThePipeline(int failAt)
    {
        int produced = 0;
        int stored = 0;
        int maxLead = 0;
        var storedItems = new ConcurrentBag<int>();
        var storeFailed = new InvalidOperationException("the store failed");
        async Task StoreAsync(int item)
        {
            await Task.Yield(); // the slow stage
            if (item == failAt * 10)
            {
                throw storeFailed;
            }

            storedItems.Add(item);
            int lead = Volatile.Read(ref produced) - Interlocked.Increment(ref stored);
            Peak.Raise(ref maxLead, lead);
        }

        async Task RunAsync()
        {
            // doc: cookbook-stages
            var fetched = new AsyncQueue<int>(maxSize: 8); // stage 1 -> stage 2
            var parsed = new AsyncQueue<int>(maxSize: 8);  // stage 2 -> stage 3

            // A stage that fails stops the pipeline: both queues shut down at once, so no stage waits for it forever.
            // The others then end quietly (QueueShutDownException), and the failure surfaces at the end.
            Task Stage(Func<Task> run) => Task.Run(async () =>
            {
                try
                {
                    await run();
                }
                catch (QueueShutDownException)
                {
                }
                catch
                {
                    fetched.Shutdown(immediate: true);
                    parsed.Shutdown(immediate: true);
                    throw;
                }
            });

            // Stage 2: two workers. Their PutAsync waits while stage 3 is behind.
            async Task ParseAsync()
            {
                await foreach (int raw in fetched)
                {
                    try
                    {
                        await parsed.PutAsync(raw * 10);
                    }
                    finally
                    {
                        fetched.TaskDone(); // handed on, or failed: done either way, so JoinAsync never hangs
                    }
                }
            }

            Task[] parsers = [Stage(ParseAsync), Stage(ParseAsync)];

            // Stage 3: one writer.
            Task writer = Stage(async () =>
            {
                await foreach (int item in parsed)
                {
                    try
                    {
                        await StoreAsync(item);
                    }
                    finally
                    {
                        parsed.TaskDone();
                    }
                }
            });

            // Stage 1: the producer. Its PutAsync waits while stage 2 is behind, so nothing piles up in memory.
            Task producer = Stage(async () =>
            {
                for (int i = 0; i < 1_000; i++)
                {
                    await fetched.PutAsync(i);
                    Interlocked.Increment(ref produced);
                }

                // Stop front to back: each stage drains before the next one is told to stop.
                await fetched.JoinAsync();
                fetched.Shutdown();
                await Task.WhenAll(parsers);
                await parsed.JoinAsync();
                parsed.Shutdown();
            });

            await Task.WhenAll([producer, .. parsers, writer]); // a stage's failure, if one failed
            // end doc
        }

        if (failAt < 0)
        {
            await RunAsync().WaitAsync(TimeSpan.FromSeconds(60));
            storedItems.Order().Should().Equal(Enumerable.Range(0, 1_000).Select(i => i * 10));
            // In flight between the producer and the store: 8 queued + 2 parsers + 8 queued + 1 writer, never more.
            maxLead.Should().BeLessThanOrEqualTo(8 + 2 + 8 + 1);
        }
        else
        {
            (await FluentActions.Awaiting(() => RunAsync().WaitAsync(TimeSpan.FromSeconds(60))).Should().ThrowAsync<InvalidOperationException>())
                .Which.Should().BeSameAs(storeFailed, "the failing stage's own exception surfaces, and nothing is left waiting");
            Volatile.Read(ref produced).Should().BeLessThan(1_000, "the producer stopped when the pipeline did");
        }
    }

    [Fact]
    public async Task StageRates_CountEveryStage()
    {
        await using FlakyApiServer server = await StartServerAsync(errorRate: 0);
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        var report = new List<string>();

        // doc: cookbook-stage-rates
        var requested = new StageMeter("requested");
        var fetched = new StageMeter("fetched");
        var batched = new StageMeter("batches");

        IAsyncEnumerable<string[]> batches = AsyncEnumerable.Range(0, 300)
            .Metered(requested)
            .MapUnordered(async (id, ct) => await http.GetStringAsync($"items/{id}", ct), maxConcurrency: 16)
            .Metered(fetched)
            .Batch(50, TimeSpan.FromMilliseconds(100))
            .Metered(batched);

        await foreach (string[] batch in batches)
        {
            // A dashboard or a timer would read the meters while the pipeline runs:
            report.Add($"{requested}; {fetched}; {batched}"); // "requested: 66 items, 1,320/s; fetched: 50 items, ..."
        }
        // end doc

        requested.Items.Should().Be(300);
        fetched.Items.Should().Be(300);
        batched.Items.Should().BeInRange(6, 300);
        report.Should().HaveCount((int)batched.Items);
        fetched.PerSecond.Should().BePositive();
    }

    [Fact]
    public void StageMeter_RateIsItemsOverElapsedTime()
    {
        var time = new FakeTimeProvider();
        var meter = new StageMeter("parse", time);
        for (int i = 0; i < 100; i++)
        {
            meter.Add();
        }

        time.Advance(TimeSpan.FromSeconds(4));

        meter.PerSecond.Should().Be(25);
        meter.ToString().Should().Be("parse: 100 items, 25/s");
    }

    [Fact]
    public async Task Shutdown_WithinGrace_ProcessesEverythingQueued()
    {
        var time = new FakeTimeProvider();
        var queue = new AsyncQueue<int>(maxSize: 100, time);
        int processed = 0;
        Task[] workers = StartWorkers(queue, 2, _ =>
        {
            Interlocked.Increment(ref processed);
            return Task.CompletedTask;
        });
        for (int i = 0; i < 50; i++)
        {
            await queue.PutAsync(i);
        }

        bool drained = await StopAsync(queue, workers, TimeSpan.FromSeconds(5));

        drained.Should().BeTrue();
        processed.Should().Be(50);
        await FluentActions.Awaiting(() => queue.PutAsync(99).AsTask()).Should().ThrowAsync<QueueShutDownException>();
    }

    [Fact]
    public async Task Shutdown_GraceRunsOut_DropsWhatIsQueuedAndLetsWorkersFinishTheirItem()
    {
        var time = new FakeTimeProvider();
        var queue = new AsyncQueue<int>(maxSize: 100, time);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var bothBusy = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int taken = 0;
        int processed = 0;
        Task[] workers = StartWorkers(queue, 2, async _ =>
        {
            if (Interlocked.Increment(ref taken) == 2)
            {
                bothBusy.TrySetResult();
            }

            await release.Task;
            Interlocked.Increment(ref processed);
        });
        for (int i = 0; i < 10; i++)
        {
            await queue.PutAsync(i);
        }

        await bothBusy.Task;

        Task<bool> stopping = StopAsync(queue, workers, TimeSpan.FromSeconds(5));
        time.Advance(TimeSpan.FromSeconds(5)); // the grace period passes with both workers stuck

        // The timed-out JoinAsync resumes StopAsync asynchronously (waiters never run inline); wait for its drop.
        SpinWait.SpinUntil(() => queue.IsEmpty, TimeSpan.FromSeconds(30)).Should().BeTrue("what was still queued is dropped");
        stopping.IsCompleted.Should().BeFalse("the workers still hold their items");
        release.SetResult();

        (await stopping).Should().BeFalse();
        processed.Should().Be(2);
        taken.Should().Be(2);
        queue.UnfinishedTasks.Should().Be(0);
    }

    // doc: cookbook-shutdown
    /// <summary>Stops a queue's workers: no new work, `grace` to finish what is queued, then drop the rest.</summary>
    /// <returns>True if everything queued was processed within `grace`; false if it ran out (what was still queued was dropped).</returns>
    private static async Task<bool> StopAsync<T>(AsyncQueue<T> queue, Task[] workers, TimeSpan grace)
    {
        queue.Shutdown(); // PutAsync now throws QueueShutDownException; GetAsync still drains what is queued
        bool drained = true;
        try
        {
            await queue.JoinAsync(grace); // every queued item was processed (TaskDone)
        }
        catch (TimeoutException)
        {
            queue.Shutdown(immediate: true); // out of time: drop what is still queued (it counts as done)
            drained = false;
        }

        await Task.WhenAll(workers); // each worker finishes the item in its hands; its loop then ends
        return drained;
    }
    // end doc

    private static Task[] StartWorkers<T>(AsyncQueue<T> queue, int count, Func<T, Task> process) =>
        Enumerable.Range(0, count).Select(_ => Task.Run(async () =>
        {
            await foreach (T item in queue)
            {
                try
                {
                    await process(item);
                }
                finally
                {
                    queue.TaskDone();
                }
            }
        })).ToArray();

    private static Task<FlakyApiServer> StartServerAsync(double errorRate) =>
        FlakyApiServer.StartAsync(new FlakyApiOptions
        {
            Latency = TimeSpan.FromMilliseconds(2),
            Jitter = TimeSpan.FromMilliseconds(1),
            ErrorRate = errorRate,
        });
}

// doc: cookbook-stage-meter
/// <summary>Counts the items that pass one stage of a pipeline and reports its rate since the meter was created.</summary>
public sealed class StageMeter(string name, TimeProvider? timeProvider = null)
{
    private readonly TimeProvider _time = timeProvider ?? TimeProvider.System;
    private readonly long _start = (timeProvider ?? TimeProvider.System).GetTimestamp();
    private long _items;

    public long Items => Interlocked.Read(ref _items);

    public double PerSecond => Items / Math.Max(_time.GetElapsedTime(_start).TotalSeconds, 1e-6);

    public void Add(long count = 1) => Interlocked.Add(ref _items, count);

    public override string ToString() =>
        string.Format(CultureInfo.InvariantCulture, "{0}: {1:N0} items, {2:N0}/s", name, Items, PerSecond);
}

public static class StageMeterExtensions
{
    /// <summary>Passes <paramref name="source"/> through unchanged, counting each item on <paramref name="meter"/>.</summary>
    public static async IAsyncEnumerable<T> Metered<T>(
        this IAsyncEnumerable<T> source, StageMeter meter, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (T item in source.WithCancellation(cancellationToken))
        {
            meter.Add();
            yield return item;
        }
    }
}
// end doc
