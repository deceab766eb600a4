using System.Collections.Concurrent;
using AsyncIterTools;
using AsyncPrimitives;

namespace FanOut.Tests;

/// <summary>The two examples on README.md's first screen, run for real (the HTTP one against the in-process API).</summary>
public sealed class ReadmeExamplesTests
{
    [Fact]
    public async Task Pipeline_FansOutBoundedAndBatches()
    {
        await using FlakyApiServer server = await FlakyApiServer.StartAsync(new FlakyApiOptions
        {
            Latency = TimeSpan.FromMilliseconds(2),
            Jitter = TimeSpan.Zero,
            ErrorRate = 0,
        });
        int stored = 0;

        // doc: readme-pipeline
        using var http = new HttpClient { BaseAddress = server.BaseAddress };

        IAsyncEnumerable<int[]> batches = AsyncEnumerable.Range(0, 1_000)
            .MapUnordered(async (id, ct) =>
            {
                using HttpResponseMessage response = await http.GetAsync($"items/{id}", ct);
                return (int)response.StatusCode;
            }, maxConcurrency: 32)                                          // at most 32 requests in flight
            .Batch(maxSize: 100, maxDelay: TimeSpan.FromMilliseconds(200)); // 100 results, or 200 ms after the first

        await foreach (int[] batch in batches)
        {
            stored += batch.Length; // e.g. write the batch to a database
        }
        // end doc

        stored.Should().Be(1_000);
        server.Requests.Should().Be(1_000);
        server.PeakInFlight.Should().BeInRange(1, 32);
    }

    [Fact]
    public async Task Queue_ProducerConsumerWithJoinAndShutdown()
    {
        string[] jobs = Enumerable.Range(0, 1_000).Select(i => $"job-{i}").ToArray();
        var processed = new ConcurrentBag<string>();
        async Task ProcessAsync(string job)
        {
            await Task.Yield();
            processed.Add(job);
        }

        // doc: readme-queue
        var queue = new AsyncQueue<string>(maxSize: 100); // PutAsync waits while 100 jobs are queued

        Task[] workers = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            await foreach (string job in queue)           // ends once the queue is shut down and drained
            {
                await ProcessAsync(job);
                queue.TaskDone();
            }
        })).ToArray();

        foreach (string job in jobs)
        {
            await queue.PutAsync(job);
        }

        await queue.JoinAsync(); // every job has been processed
        queue.Shutdown();        // lets the workers' loops end
        await Task.WhenAll(workers);
        // end doc

        processed.Order(StringComparer.Ordinal).Should().Equal(jobs.Order(StringComparer.Ordinal)); // each job once
        queue.UnfinishedTasks.Should().Be(0);
    }
}
