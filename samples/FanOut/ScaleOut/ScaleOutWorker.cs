using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using AsyncPrimitives;
using AsyncPrimitives.Postgres;
using Npgsql;

namespace FanOut;

/// <summary>What the demo's parent tells each instance it starts (as JSON after the hidden <c>--worker</c> option).</summary>
/// <param name="ConnectionString">The PostgreSQL server the instances share.</param>
/// <param name="Schema">The run's schema: the queue, the semaphore and the effects table.</param>
/// <param name="Instance">This instance's number, from 1.</param>
/// <param name="ApiAddress">The flaky API, served by the parent.</param>
/// <param name="GlobalLimit">The shared semaphore's count, or 0 for no global limit.</param>
/// <param name="FanOut">The pipeline each instance runs (<see cref="FanOutOptions.Limit"/> is its own limit).</param>
public sealed record ScaleOutWorkerSettings(
    string ConnectionString, string Schema, int Instance, Uri ApiAddress, int GlobalLimit, FanOutOptions FanOut);

/// <summary>
/// One instance of the scale-out demo, in a process of its own: the sample's <see cref="FanOutPipeline"/>, fed by the
/// deliveries of the shared <c>PostgresQueue</c> (pulled only as a call slot frees up), each request holding a permit
/// of the shared <c>PostgresSemaphore</c>. Its consumers record each result in the effects table (the business effect),
/// then complete the batch's deliveries. It ends when the parent shuts the queue down and nothing is left.
/// </summary>
public static class ScaleOutWorker
{
    /// <summary>The most connections an instance opens (its coordinator's LISTEN connection among them: the coordinator
    /// takes it from the same pool).</summary>
    public const int ConnectionsPerInstance = 16;

    /// <summary>Runs the instance until the queue is shut down and drained.</summary>
    public static async Task RunAsync(ScaleOutWorkerSettings settings, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var connection = new NpgsqlConnectionStringBuilder(settings.ConnectionString)
        {
            ApplicationName = $"fanout-instance-{settings.Instance}",
            // The calls in flight (a permit acquire or release each, the gets and completions) share a few
            // connections, one statement at a time each, so that several instances fit in a server's max_connections
            // (100 by default); a call waits for a free connection meanwhile.
            MaxPoolSize = ConnectionsPerInstance,
            Timeout = 60,
        };
        await using NpgsqlDataSource dataSource = NpgsqlDataSource.Create(connection);
        await using var coordinator = new PostgresCoordinator(dataSource, new PostgresCoordinatorOptions { Schema = settings.Schema });
        PostgresQueue<int> queue = coordinator.CreateQueue<int>(ScaleOutDemo.QueueName);
        using RateLimiter? globalLimit = settings.GlobalLimit > 0
            ? coordinator.CreateSemaphore(ScaleOutDemo.SemaphoreName, settings.GlobalLimit).AsRateLimiter()
            : null;

        // The deliveries this instance holds, by request id (an id is in the queue once).
        var open = new ConcurrentDictionary<int, PostgresDelivery<int>>();
        string insert =
            $"INSERT INTO {settings.Schema}.{ScaleOutDemo.EffectsTable} (id, instance, attempt, succeeded, calls) " +
            "SELECT id, $2, attempt, succeeded, calls FROM unnest($1::int[], $3::int[], $4::bool[], $5::int[]) AS r(id, attempt, succeeded, calls)";

        async ValueTask RecordAndCompleteAsync(CallResult[] batch, CancellationToken token)
        {
            var deliveries = new List<PostgresDelivery<int>>(batch.Length);
            var results = new List<CallResult>(batch.Length);
            foreach (CallResult result in batch)
            {
                if (open.TryRemove(result.Id, out PostgresDelivery<int>? delivery))
                {
                    deliveries.Add(delivery);
                    results.Add(result);
                }
            }

            // The business effect first, then the completion: a crash in between delivers the item again, and its
            // effect is recorded twice (at least once).
            await using (NpgsqlCommand command = dataSource.CreateCommand(insert))
            {
                command.Parameters.Add(new NpgsqlParameter { Value = results.Select(r => r.Id).ToArray() });
                command.Parameters.Add(new NpgsqlParameter { Value = settings.Instance });
                command.Parameters.Add(new NpgsqlParameter { Value = deliveries.Select(d => d.Attempt).ToArray() });
                command.Parameters.Add(new NpgsqlParameter { Value = results.Select(r => r.Succeeded).ToArray() });
                command.Parameters.Add(new NpgsqlParameter { Value = results.Select(r => r.Attempts).ToArray() });
                await command.ExecuteNonQueryAsync(token);
            }

            try
            {
                await queue.CompleteManyAsync(deliveries, token);
            }
            catch (PostgresLeaseLostException e)
            {
                // Those items went (or go) to another instance, which records them again: counted as delivered twice.
                await Console.Error.WriteLineAsync($"instance {settings.Instance}: {e.Message}");
            }
        }

        using var http = new HttpClient { BaseAddress = settings.ApiAddress };
        using (await http.GetAsync(new Uri("health", UriKind.Relative), cancellationToken))
        {
            // one warm-up call (connection, JIT), outside the measured run
        }

        await using (NpgsqlCommand ready = dataSource.CreateCommand($"INSERT INTO {settings.Schema}.{ScaleOutDemo.ReadyTable} (instance) VALUES ($1)"))
        {
            ready.Parameters.Add(new NpgsqlParameter { Value = settings.Instance });
            await ready.ExecuteNonQueryAsync(cancellationToken);
        }

        var pipeline = new FanOutPipeline(
            http, settings.FanOut, RecordAndCompleteAsync, ids: TakeAsync(queue, open, Math.Max(1, settings.FanOut.Limit / 4)), limiter: globalLimit);
        await pipeline.RunAsync(cancellationToken);
    }

    /// <summary>The ids of the queue's deliveries, as the pipeline asks for them, until the queue is shut down and
    /// empty. Taken up to <paramref name="batch"/> at a time (one round trip), so at most that many wait for a call slot.</summary>
    private static async IAsyncEnumerable<int> TakeAsync(
        PostgresQueue<int> queue,
        ConcurrentDictionary<int, PostgresDelivery<int>> open,
        int batch,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (true)
        {
            IReadOnlyList<PostgresDelivery<int>> deliveries;
            try
            {
                deliveries = await queue.GetManyAsync(batch, cancellationToken);
            }
            catch (QueueShutDownException)
            {
                yield break;
            }

            foreach (PostgresDelivery<int> delivery in deliveries)
            {
                // A delivery of an id this instance already holds means the older one's lease was lost: the newer one
                // is the one to complete.
                open[delivery.Item] = delivery;
                yield return delivery.Item;
            }
        }
    }
}
