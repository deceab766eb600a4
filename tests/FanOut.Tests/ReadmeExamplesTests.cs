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

    [Theory]
    [InlineData(0)]
    [InlineData(10)]
    public async Task Queue_ProducerConsumerWithJoinAndShutdown(int everyNthFails)
    {
        // With every tenth job failing (100 failures, more than there are workers), no worker stops and nothing waits forever.
        string[] jobs = Enumerable.Range(0, 1_000).Select(i => $"job-{i}").ToArray();
        string[] failing = everyNthFails == 0 ? [] : jobs.Where((_, i) => i % everyNthFails == 3).ToArray();
        var processed = new ConcurrentBag<string>();
        async Task ProcessAsync(string job)
        {
            await Task.Yield();
            if (failing.Contains(job))
            {
                throw new InvalidOperationException($"{job} failed");
            }

            processed.Add(job);
        }

        Func<Task<ConcurrentQueue<(string Job, Exception Error)>>> example = async () =>
        {
            // doc: readme-queue
            var queue = new AsyncQueue<string>(maxSize: 100); // PutAsync waits while 100 jobs are queued
            var failed = new ConcurrentQueue<(string Job, Exception Error)>();

            Task[] workers = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
            {
                await foreach (string job in queue)           // ends once the queue is shut down and drained
                {
                    try
                    {
                        await ProcessAsync(job);
                    }
                    catch (Exception ex)
                    {
                        failed.Enqueue((job, ex));            // a failing job does not stop its worker
                    }
                    finally
                    {
                        queue.TaskDone();                     // done either way, so JoinAsync never hangs
                    }
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
            queue.UnfinishedTasks.Should().Be(0);
            return failed;
        };

        ConcurrentQueue<(string Job, Exception Error)> failed = await example().WaitAsync(TimeSpan.FromSeconds(20));

        processed.Order(StringComparer.Ordinal).Should().Equal(jobs.Except(failing).Order(StringComparer.Ordinal)); // each job once
        failed.Select(f => f.Job).Order(StringComparer.Ordinal).Should().Equal(failing.Order(StringComparer.Ordinal));
        failed.Select(f => f.Error).Should().AllBeOfType<InvalidOperationException>();
    }
}
