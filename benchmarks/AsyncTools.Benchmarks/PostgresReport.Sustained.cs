using System.Diagnostics;
using AsyncPrimitives.Postgres;
using Npgsql;

namespace AsyncTools.Benchmarks;

public static partial class PostgresReport
{
    private sealed partial class Run
    {
        /// <summary>
        /// The <c>postgres --sustained</c> report: the batched queue row (4 producers with <c>PutManyAsync</c>, 4
        /// consumers with <c>GetManyAsync</c> + <c>CompleteManyAsync</c>) without a break for 150 s, with its rate per
        /// 10 s. Short rounds never see what a queue table goes through between autovacuum's passes: dead rows pile up,
        /// the takes walk them, and the rate falls until the next pass. Producers hold back while 10,000 items wait, as
        /// a pipeline with back-pressure would.
        /// </summary>
        public async Task SustainedAsync(bool smoke)
        {
            const int Producers = 4, Consumers = 4, Backlog = 10_000;
            TimeSpan duration = smoke ? TimeSpan.FromSeconds(2) : TimeSpan.FromSeconds(150);
            TimeSpan interval = smoke ? TimeSpan.FromSeconds(1) : TimeSpan.FromSeconds(10);
            PostgresQueue<Job> queue = (await CoordinatorAsync("bench-sustained")).CreateQueue<Job>("bench-sustained");
            NpgsqlDataSource admin = DataSource("bench-admin");

            output.WriteLine($"## Sustained batches: {Producers} producers × {Consumers} consumers, batches of {sizes.BatchSize}, " +
                             $"{duration.TotalSeconds:0} s (autovacuum_naptime {await ScalarAsync<string>(admin, "SHOW autovacuum_naptime")})");
            output.WriteLine();
            output.WriteLine("| Interval end (s) | Items/s | Dead rows in queue_items | Autovacuum passes |");
            output.WriteLine("|---:|---:|---:|---:|");

            using var stop = new CancellationTokenSource(duration);
            long put = 0, got = 0;
            Func<Func<int, bool>, CancellationToken, Task> consumer = OurConsumerAsync(queue, sizes.BatchSize);
            Task[] work =
            [
                .. Enumerable.Range(0, Producers).Select(_ => Task.Run(async () =>
                {
                    while (!stop.IsCancellationRequested)
                    {
                        if (Interlocked.Read(ref put) - Interlocked.Read(ref got) > Backlog)
                        {
                            await Task.Delay(1);
                            continue;
                        }

                        await queue.PutManyAsync(Enumerable.Range(0, sizes.BatchSize).Select(i => new Job(i, "job")));
                        Interlocked.Add(ref put, sizes.BatchSize);
                    }
                })),
                // The report's batched consumer, counting what it takes (the check that nothing is taken twice is the
                // report's; here the run has no end to count to).
                .. Enumerable.Range(0, Consumers).Select(_ => Task.Run(() => consumer(_ => Interlocked.Increment(ref got) > 0, stop.Token))),
            ];

            string table = $"FROM pg_stat_user_tables WHERE schemaname = '{schema}' AND relname = 'queue_items'";
            Stopwatch clock = Stopwatch.StartNew();
            (long Got, TimeSpan At) last = (0, TimeSpan.Zero);
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

                (long Got, TimeSpan At) now = (Interlocked.Read(ref got), clock.Elapsed);
                long dead = await ScalarAsync<long>(admin, $"SELECT coalesce(sum(n_dead_tup), 0)::bigint {table}");
                long passes = await ScalarAsync<long>(admin, $"SELECT coalesce(sum(autovacuum_count), 0)::bigint {table}");
                output.WriteLine($"| {now.At.TotalSeconds:0} | {(now.Got - last.Got) / (now.At - last.At).TotalSeconds:0} | {dead:N0} | {passes} |");
                last = now;
            }

            await Task.WhenAll(work);
            output.WriteLine();
        }

        private static async Task<T> ScalarAsync<T>(NpgsqlDataSource source, string sql)
        {
            await using NpgsqlCommand command = source.CreateCommand(sql);
            return (T)(await command.ExecuteScalarAsync())!;
        }
    }
}
