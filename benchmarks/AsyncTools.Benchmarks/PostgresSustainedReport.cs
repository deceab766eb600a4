using System.Diagnostics;
using AsyncPrimitives.Postgres;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncTools.Benchmarks;

/// <summary>
/// The <c>postgres --sustained</c> report: the batched queue row of <see cref="PostgresReport"/> (4 producers with
/// <c>PutManyAsync</c>, 4 consumers with <c>GetManyAsync(100)</c> + <c>CompleteManyAsync</c>) run without a break for
/// minutes, with its rate per interval. Short rounds never see what a queue table goes through between autovacuum's
/// passes: dead rows pile up, the takes walk them, and the rate falls until the next pass. Producers hold back while
/// 10,000 items wait, as a pipeline with back-pressure would.
/// </summary>
public static class PostgresSustainedReport
{
    private const int Producers = 4, Consumers = 4, Batch = 100, Backlog = 10_000;

    /// <summary>Runs the report; 0 when it ran (or was skipped for want of a server), 1 when a call failed.</summary>
    public static async Task<int> RunAsync(TextWriter output, bool smoke)
    {
        if (TestPostgres.Problem is { } problem)
        {
            output.WriteLine($"Postgres sustained report skipped: {problem}");
            return 0;
        }

        TimeSpan duration = smoke ? TimeSpan.FromSeconds(2) : TimeSpan.FromSeconds(150);
        TimeSpan interval = smoke ? TimeSpan.FromSeconds(1) : TimeSpan.FromSeconds(10);
        await using TestPostgres server = await TestPostgres.StartAsync();
        string schema = "sustained_" + Guid.NewGuid().ToString("N")[..12];
        await using NpgsqlDataSource source = NpgsqlDataSource.Create(server.ConnectionString);
        try
        {
            await using (var coordinator = new PostgresCoordinator(source, new PostgresCoordinatorOptions { Schema = schema }))
            {
                await coordinator.EnsureSchemaAsync();
                output.WriteLine($"## Sustained batches: {Producers} producers × {Consumers} consumers, batches of {Batch}, " +
                                 $"{duration.TotalSeconds:0} s (autovacuum_naptime {await ShowAsync(source, "autovacuum_naptime")})");
                output.WriteLine();
                output.WriteLine("| Interval end (s) | Items/s | Dead rows in queue_items | Autovacuum passes |");
                output.WriteLine("|---:|---:|---:|---:|");
                await RunLoadAsync(coordinator.CreateQueue<int>("sustained"), duration, interval, async (seconds, rate) =>
                {
                    (long dead, long passes) = await TableStateAsync(source, schema);
                    output.WriteLine($"| {seconds:0} | {rate:0} | {dead:N0} | {passes} |");
                });
            }

            output.WriteLine();
            return 0;
        }
        catch (PostgresCoordinationException e)
        {
            output.WriteLine($"Postgres sustained report FAILED: {e.Message}");
            return 1;
        }
        finally
        {
            await using NpgsqlCommand drop = source.CreateCommand($"DROP SCHEMA IF EXISTS {schema} CASCADE");
            await drop.ExecuteNonQueryAsync();
        }
    }

    private static async Task RunLoadAsync(PostgresQueue<int> queue, TimeSpan duration, TimeSpan interval, Func<double, double, Task> report)
    {
        using var stop = new CancellationTokenSource(duration);
        long put = 0, got = 0;
        var work = new List<Task>();
        for (int p = 0; p < Producers; p++)
        {
            work.Add(Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    if (Interlocked.Read(ref put) - Interlocked.Read(ref got) > Backlog)
                    {
                        await Task.Delay(1);
                        continue;
                    }

                    await queue.PutManyAsync(Enumerable.Range(0, Batch));
                    Interlocked.Add(ref put, Batch);
                }
            }));
        }

        for (int c = 0; c < Consumers; c++)
        {
            work.Add(Task.Run(async () =>
            {
                try
                {
                    while (true)
                    {
                        IReadOnlyList<PostgresDelivery<int>> deliveries = await queue.GetManyAsync(Batch, stop.Token);
                        await queue.CompleteManyAsync(deliveries);
                        Interlocked.Add(ref got, deliveries.Count);
                    }
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    // The run is over; a cancelled get took nothing.
                }
            }));
        }

        Stopwatch clock = Stopwatch.StartNew();
        long last = 0;
        TimeSpan lastAt = TimeSpan.Zero;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(interval, stop.Token);
            }
            catch (OperationCanceledException)
            {
                // The last interval ends with the run.
            }

            long now = Interlocked.Read(ref got);
            TimeSpan at = clock.Elapsed;
            await report(at.TotalSeconds, (now - last) / (at - lastAt).TotalSeconds);
            (last, lastAt) = (now, at);
        }

        await Task.WhenAll(work);
    }

    private static async Task<(long Dead, long Passes)> TableStateAsync(NpgsqlDataSource source, string schema)
    {
        await using NpgsqlCommand state = source.CreateCommand(
            "SELECT n_dead_tup, autovacuum_count FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'queue_items'");
        state.Parameters.Add(new NpgsqlParameter { Value = schema });
        await using NpgsqlDataReader reader = await state.ExecuteReaderAsync();
        return await reader.ReadAsync() ? (reader.GetInt64(0), reader.GetInt64(1)) : (0, 0);
    }

    private static async Task<string> ShowAsync(NpgsqlDataSource source, string setting)
    {
        await using NpgsqlCommand show = source.CreateCommand("SHOW " + setting);
        return (string)(await show.ExecuteScalarAsync())!;
    }
}
