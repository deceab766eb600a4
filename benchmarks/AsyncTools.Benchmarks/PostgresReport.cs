using System.Diagnostics;
using System.Globalization;
using AsyncPrimitives.Postgres;
using AsyncTools.Testing;
using Medallion.Threading.Postgres;
using Npgsql;

namespace AsyncTools.Benchmarks;

/// <summary>
/// The <c>postgres</c> report: AsyncPrimitives.Postgres side by side with DistributedLock.Postgres and a naive
/// one-statement queue, in one run on one server (a throwaway one, or <c>ASYNCTOOLS_POSTGRES</c>'s). A bounded
/// harness rather than BenchmarkDotNet: the rows need several tasks and coordinators at once, and percentiles.
/// Every comparison alternates short rounds of ours and the peer, so a change of load on a shared machine hits both.
/// Next to each rate: bytes allocated and thread-pool work items completed per operation, in the whole process.
/// </summary>
public static partial class PostgresReport
{
    private sealed record Job(int Id, string Name);

    /// <summary>How much each row runs: rounds, their length, the queue's items and batch size, the latency samples. A
    /// round of the batched queue puts <see cref="BatchedQueueItems"/> items, ten times a
    /// single-item round's, so that both rounds last about as long (otherwise a batched round is a few tens of
    /// milliseconds, mostly filling and draining the pipeline).</summary>
    private sealed record Sizes(int Rounds, TimeSpan Round, int QueueItems, int BatchedQueueItems, int BatchSize, int LatencySamples);

    private static readonly Sizes s_real = new(Rounds: 6, Round: TimeSpan.FromSeconds(1), QueueItems: 2_000, BatchedQueueItems: 20_000, BatchSize: 100, LatencySamples: 300);
    private static readonly Sizes s_smoke = new(Rounds: 1, Round: TimeSpan.FromMilliseconds(200), QueueItems: 40, BatchedQueueItems: 400, BatchSize: 10, LatencySamples: 5);

    /// <summary>Runs the report, or with <paramref name="sustained"/> its sustained form (see
    /// <see cref="Run.SustainedAsync"/>); 0 when it ran (or was skipped for want of a server), 1 when a check failed.</summary>
    public static async Task<int> RunAsync(TextWriter output, bool smoke, bool sustained = false)
    {
        if (TestPostgres.Problem is { } problem)
        {
            output.WriteLine($"Postgres benchmarks skipped: {problem}");
            return 0;
        }

        Sizes sizes = smoke ? s_smoke : s_real;
        await using TestPostgres server = await TestPostgres.StartAsync();
        string schema = "bench_" + Guid.NewGuid().ToString("N")[..12];
        var report = new Run(server, schema, sizes, output);
        try
        {
            await (sustained ? report.SustainedAsync(smoke) : report.AllAsync());
        }
        catch (InvalidOperationException e)
        {
            output.WriteLine($"Postgres benchmarks FAILED: {e.Message}");
            return 1;
        }
        finally
        {
            await report.DropAsync();
        }

        return 0;
    }

    private sealed partial class Run(TestPostgres server, string schema, Sizes sizes, TextWriter output)
    {
        private readonly List<IAsyncDisposable> _owned = [];

        public async Task AllAsync()
        {
            await HeaderAsync();
            await LocksAsync();
            await SemaphoreAsync();
            await QueuesAsync();
            await LatencyAsync();
            // Last: its 24,000 items leave dead rows in queue_items until autovacuum's next pass, and run before the
            // queue rows they halved the batched row's rate whenever that pass came after them (see the CHANGELOG).
            await PingPongAsync();
            foreach (IAsyncDisposable owned in Enumerable.Reverse(_owned))
            {
                await owned.DisposeAsync();
            }

            _owned.Clear();
        }

        public async Task DropAsync()
        {
            foreach (IAsyncDisposable owned in Enumerable.Reverse(_owned))
            {
                await owned.DisposeAsync();
            }

            await using NpgsqlDataSource admin = NpgsqlDataSource.Create(server.ConnectionString);
            await using NpgsqlCommand drop = admin.CreateCommand($"DROP SCHEMA IF EXISTS {schema} CASCADE");
            await drop.ExecuteNonQueryAsync();
        }

        private async Task HeaderAsync()
        {
            await using NpgsqlDataSource admin = NpgsqlDataSource.Create(server.ConnectionString);
            Task<string> Show(string setting) => ScalarAsync<string>(admin, "SHOW " + setting);

            output.WriteLine("## Scale-out (PostgreSQL): AsyncPrimitives.Postgres vs DistributedLock.Postgres 1.3.2 and a naive queue");
            output.WriteLine();
            output.WriteLine($"Server: PostgreSQL {await Show("server_version")} on 127.0.0.1 (same machine), fsync={await Show("fsync")}, " +
                             $"synchronous_commit={await Show("synchronous_commit")}, shared_buffers={await Show("shared_buffers")}.");
            output.WriteLine($"Machine: {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, " +
                             $".NET {Environment.Version}; load average at start: {LoadAverage()}.");
            output.WriteLine($"Each comparison: {sizes.Rounds} alternating rounds of {sizes.Round.TotalSeconds:0.#} s per side. " +
                             "B/op and work items/op: bytes allocated and thread-pool work items completed in the whole process, per operation.");
            output.WriteLine();
        }

        private async Task<PostgresCoordinator> CoordinatorAsync(string name)
        {
            NpgsqlDataSource source = DataSource(name);
            var coordinator = new PostgresCoordinator(source, new PostgresCoordinatorOptions { Schema = schema });
            _owned.Add(coordinator);
            await coordinator.EnsureSchemaAsync();
            return coordinator;
        }

        /// <summary>A data source of its own (a connection pool, as a process has). The peers' prepare their statements
        /// automatically, as AsyncPrimitives.Postgres prepares its own.</summary>
        private NpgsqlDataSource DataSource(string application)
        {
            var builder = new NpgsqlConnectionStringBuilder(server.ConnectionString) { ApplicationName = application, MaxAutoPrepare = 16 };
            NpgsqlDataSource source = NpgsqlDataSource.Create(builder);
            _owned.Add(source);
            return source;
        }

        private async Task LocksAsync()
        {
            PostgresCoordinator coordinator = await CoordinatorAsync("bench-ours");
            PostgresLock ours = coordinator.CreateLock("bench-lock");
            var theirs = new PostgresDistributedLock(new PostgresAdvisoryLockKey("bench-lock", allowHashing: true), DataSource("bench-peer"));

            output.WriteLine("### Lock acquire + release (one lock, every task contends for it)");
            output.WriteLine();
            output.WriteLine("| Tasks | Ours (ops/s) | DistributedLock.Postgres (ops/s) | Ratio | Ours B/op | Peer B/op | Ours work items/op | Peer work items/op |");
            output.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (int tasks in new[] { 1, 4 })
            {
                (Totals a, Totals b) = await CompareAsync(
                    tasks,
                    async () =>
                    {
                        await using PostgresLease lease = await ours.AcquireAsync();
                    },
                    async () =>
                    {
                        await using PostgresDistributedLockHandle handle = await theirs.AcquireAsync();
                    });
                output.WriteLine(
                    $"| {tasks} | {a.Rate:N0} | {b.Rate:N0} | {a.Rate / b.Rate:0.00} | {a.BytesPerOp:N0} | {b.BytesPerOp:N0} | " +
                    $"{a.WorkItemsPerOp:0.0} | {b.WorkItemsPerOp:0.0} |");
            }

            output.WriteLine();
        }

        private async Task SemaphoreAsync()
        {
            PostgresCoordinator firstCoordinator = await CoordinatorAsync("bench-sem-1");
            PostgresCoordinator secondCoordinator = await CoordinatorAsync("bench-sem-2");
            output.WriteLine("### Semaphore acquire + release, 8 tasks from 2 coordinators (separate data sources)");
            output.WriteLine();
            output.WriteLine("| Max count | Tasks | Coordinators | Ops/s | B/op | Work items/op |");
            output.WriteLine("|---:|---:|---:|---:|---:|---:|");
            foreach (int maxCount in new[] { 64, 1 })
            {
                PostgresSemaphore first = firstCoordinator.CreateSemaphore("bench-semaphore-" + maxCount, maxCount);
                PostgresSemaphore second = secondCoordinator.CreateSemaphore("bench-semaphore-" + maxCount, maxCount);
                Totals totals = default;
                for (int round = 0; round < sizes.Rounds; round++)
                {
                    totals += await MeasureAsync(8, task => task % 2 == 0 ? Op(first) : Op(second));
                }

                output.WriteLine($"| {maxCount} | 8 | 2 | {totals.Rate:N0} | {totals.BytesPerOp:N0} | {totals.WorkItemsPerOp:0.0} |");
            }

            static Func<Task> Op(PostgresSemaphore semaphore) => async () =>
            {
                await using PostgresLease lease = await semaphore.AcquireAsync();
            };

            output.WriteLine();
            output.WriteLine("With a max count of 1 every acquire waits for a release, and about half of the hand-offs go to a waiter in the " +
                             "other coordinator, which a notification wakes. No other .NET library has a PostgreSQL semaphore to compare with.");
            output.WriteLine();
        }

        /// <summary>Request and reply across two coordinators: each exchange is two puts, each woken in the other coordinator
        /// by a notification.</summary>
        private async Task PingPongAsync()
        {
            PostgresCoordinator left = await CoordinatorAsync("bench-ping");
            PostgresCoordinator right = await CoordinatorAsync("bench-pong");
            PostgresQueue<Job> pingsLeft = left.CreateQueue<Job>("bench-pings"), pingsRight = right.CreateQueue<Job>("bench-pings");
            PostgresQueue<Job> pongsLeft = left.CreateQueue<Job>("bench-pongs"), pongsRight = right.CreateQueue<Job>("bench-pongs");
            using var stop = new CancellationTokenSource();
            Task echo = Task.Run(async () =>
            {
                try
                {
                    await foreach (PostgresDelivery<Job> ping in pingsRight.ReadAllAsync(stop.Token))
                    {
                        await pongsRight.PutAsync(ping.Item, cancellationToken: CancellationToken.None);
                    }
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                }
            });

            Totals totals = default;
            await using (IAsyncEnumerator<PostgresDelivery<Job>> pongs = pongsLeft.ReadAllAsync().GetAsyncEnumerator())
            {
                for (int round = 0; round < sizes.Rounds; round++)
                {
                    totals += await InTurnAsync(async id =>
                    {
                        await pingsLeft.PutAsync(new Job(id, "ping"));
                        await pongs.MoveNextAsync();
                    });
                }

                await pongs.Current.CompleteAsync();
            }

            await stop.CancelAsync();
            await echo;
            output.WriteLine("### Request and reply across two coordinators (a put, and the reply's put, each woken by a notification)");
            output.WriteLine();
            output.WriteLine("| Exchanges/s | ms per exchange | B/exchange | Work items/exchange |");
            output.WriteLine("|---:|---:|---:|---:|");
            output.WriteLine($"| {totals.Rate:N0} | {1000 / totals.Rate:0.00} | {totals.BytesPerOp:N0} | {totals.WorkItemsPerOp:0.0} |");
            output.WriteLine();
            output.WriteLine("Both loops are `ReadAllAsync` readers: one puts a request and waits for the reply, the other puts each request it " +
                             "reads back as the reply. B/exchange and work items/exchange count both coordinators (one process).");
            output.WriteLine();
        }

        private async Task QueuesAsync()
        {
            PostgresCoordinator coordinator = await CoordinatorAsync("bench-queue");
            NpgsqlDataSource naive = DataSource("bench-naive");
            await using (NpgsqlCommand create = naive.CreateCommand(
                $"CREATE TABLE {schema}.naive_queue (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)"))
            {
                await create.ExecuteNonQueryAsync();
            }

            PostgresQueue<Job> single = coordinator.CreateQueue<Job>("bench-single");
            PostgresQueue<Job> batched = coordinator.CreateQueue<Job>("bench-batched");
            PostgresQueue<Job> read = coordinator.CreateQueue<Job>("bench-read");
            PostgresQueue<Job> alone = coordinator.CreateQueue<Job>("bench-one-task");
            PostgresQueue<Job> aloneRead = coordinator.CreateQueue<Job>("bench-one-task-read");
            Totals ours = default, oursRead = default, oursBatched = default, theirs = default;
            Totals oursInTurn = default, oursReadInTurn = default, theirsInTurn = default;
            for (int round = 0; round < sizes.Rounds; round++)
            {
                theirs += await PipelineAsync(sizes.QueueItems, NaiveProducerAsync(naive), NaiveConsumerAsync(naive));
                ours += await PipelineAsync(sizes.QueueItems, OurProducerAsync(single, 1), OurConsumerAsync(single, 1));
                oursRead += await PipelineAsync(sizes.QueueItems, OurProducerAsync(read, 1), OurReadLoopAsync(read));
                oursBatched += await PipelineAsync(sizes.BatchedQueueItems, OurProducerAsync(batched, sizes.BatchSize), OurConsumerAsync(batched, sizes.BatchSize));
                theirsInTurn += await InTurnAsync(NaiveInTurnAsync(naive));
                oursInTurn += await InTurnAsync(async id =>
                {
                    await alone.PutAsync(new Job(id, "job"));
                    await (await alone.GetAsync()).CompleteAsync();
                });
                await using (IAsyncEnumerator<PostgresDelivery<Job>> reader = aloneRead.ReadAllAsync().GetAsyncEnumerator())
                {
                    oursReadInTurn += await InTurnAsync(async id =>
                    {
                        await aloneRead.PutAsync(new Job(id, "job"));
                        await reader.MoveNextAsync(); // completes the item before, and takes this one
                    });
                    await reader.Current.CompleteAsync();
                }
            }

            QueueTable(
                $"Queue put → get → complete: 4 producers, 4 consumers, {sizes.QueueItems:N0} items a round ({sizes.BatchedQueueItems:N0} in batches)",
                ("Naive: INSERT; DELETE … FOR UPDATE SKIP LOCKED RETURNING", theirs),
                ("PostgresQueue: PutAsync; GetAsync; CompleteAsync", ours),
                ("PostgresQueue: PutAsync; ReadAllAsync (completes in the next get)", oursRead),
                ($"PostgresQueue, batches of {sizes.BatchSize}: PutManyAsync; GetManyAsync; CompleteManyAsync", oursBatched));
            output.WriteLine("The naive loop deletes an item as it takes it: one statement per item, and an item whose consumer crashes is lost. " +
                             "A naive consumer that finds the table empty retries after 1 ms. PostgresQueue leases the item, " +
                             "completes it in a second statement (with ReadAllAsync: in the statement that takes the next item), " +
                             "and redelivers it if its consumer dies.");
            output.WriteLine();
            QueueTable(
                $"Queue, one task: put, then get, then complete, {sizes.QueueItems:N0} items a round",
                ("Naive: INSERT; DELETE … RETURNING", theirsInTurn),
                ("PostgresQueue: PutAsync; GetAsync; CompleteAsync", oursInTurn),
                ("PostgresQueue: PutAsync; ReadAllAsync (completes in the next get)", oursReadInTurn));
            output.WriteLine("Every put here also sends a NOTIFY after its commit (for getters in other processes), which the loop's own " +
                             "coordinator receives and ignores.");
            output.WriteLine();
        }

        /// <summary>Writes a queue table: the naive loop first (the baseline), then ours, each with its ratio to it.</summary>
        private void QueueTable(string heading, (string Label, Totals Totals) naive, params (string Label, Totals Totals)[] ours)
        {
            output.WriteLine($"### {heading}");
            output.WriteLine();
            output.WriteLine("| Queue | Items/s | Ratio to naive | B/item | Work items/item |");
            output.WriteLine("|---|---:|---:|---:|---:|");
            output.WriteLine($"| {naive.Label} (baseline) | {naive.Totals.Rate:N0} | 1.00 | {naive.Totals.BytesPerOp:N0} | {naive.Totals.WorkItemsPerOp:0.0} |");
            foreach ((string label, Totals totals) in ours)
            {
                output.WriteLine($"| {label} | {totals.Rate:N0} | {totals.Rate / naive.Totals.Rate:0.00} | {totals.BytesPerOp:N0} | {totals.WorkItemsPerOp:0.0} |");
            }

            output.WriteLine();
        }

        /// <summary>Runs <paramref name="item"/> for each of a round's items in turn, on one task.</summary>
        private async Task<Totals> InTurnAsync(Func<int, Task> item)
        {
            Snapshot start = Snapshot.Take();
            for (int id = 0; id < sizes.QueueItems; id++)
            {
                await item(id);
            }

            return start.Until(sizes.QueueItems);
        }

        /// <summary>The naive loop's get: takes the first item and deletes it, in one statement.</summary>
        private string NaiveGetSql =>
            $"DELETE FROM {schema}.naive_queue WHERE id = (SELECT id FROM {schema}.naive_queue ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING payload::text";

        private Func<int, Task> NaiveInTurnAsync(NpgsqlDataSource source) => async id =>
        {
            await NaiveProducerAsync(source)(id, id + 1);
            await using NpgsqlCommand get = source.CreateCommand(NaiveGetSql);
            string payload = (string)(await get.ExecuteScalarAsync())!;
            System.Text.Json.JsonSerializer.Deserialize<Job>(payload);
        };

        /// <summary>Runs 4 producers (each putting a quarter of <paramref name="items"/>) and 4 consumers until every item is
        /// consumed; checks that each was consumed exactly once.</summary>
        private async Task<Totals> PipelineAsync(int items, Func<int, int, Task> produce, Func<Func<int, bool>, CancellationToken, Task> consume)
        {
            var seen = new int[items];
            int consumed = 0;
            using var done = new CancellationTokenSource();
            bool Take(int id)
            {
                if (Interlocked.Increment(ref seen[id]) != 1)
                {
                    throw new InvalidOperationException($"Item {id} was consumed twice.");
                }

                if (Interlocked.Increment(ref consumed) == items)
                {
                    done.Cancel();
                }

                return true;
            }

            Snapshot start = Snapshot.Take();
            var tasks = new List<Task>();
            for (int p = 0; p < 4; p++)
            {
                int from = p * items / 4, to = (p + 1) * items / 4;
                tasks.Add(Task.Run(() => produce(from, to)));
            }

            for (int c = 0; c < 4; c++)
            {
                tasks.Add(Task.Run(() => consume(Take, done.Token)));
            }

            Task all = Task.WhenAll(tasks);
            if (await Task.WhenAny(all, Task.Delay(TimeSpan.FromMinutes(2))) != all)
            {
                throw new InvalidOperationException($"The queue round did not finish in 2 minutes ({Volatile.Read(ref consumed)} of {items} consumed).");
            }

            await all;
            return start.Until(items);
        }

        private Func<int, int, Task> NaiveProducerAsync(NpgsqlDataSource source) => async (from, to) =>
        {
            for (int id = from; id < to; id++)
            {
                await using NpgsqlCommand put = source.CreateCommand($"INSERT INTO {schema}.naive_queue (payload) VALUES ($1::jsonb)");
                put.Parameters.Add(new NpgsqlParameter<string> { TypedValue = System.Text.Json.JsonSerializer.Serialize(new Job(id, "job")) });
                await put.ExecuteNonQueryAsync();
            }
        };

        private Func<Func<int, bool>, CancellationToken, Task> NaiveConsumerAsync(NpgsqlDataSource source) => async (take, done) =>
        {
            string sql = NaiveGetSql;
            while (!done.IsCancellationRequested)
            {
                await using NpgsqlCommand get = source.CreateCommand(sql);
                if (await get.ExecuteScalarAsync() is string payload)
                {
                    take(System.Text.Json.JsonSerializer.Deserialize<Job>(payload)!.Id);
                }
                else
                {
                    try
                    {
                        await Task.Delay(1, done);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                }
            }
        };

        private static Func<int, int, Task> OurProducerAsync(PostgresQueue<Job> queue, int batch) => async (from, to) =>
        {
            for (int id = from; id < to; id += batch)
            {
                if (batch == 1)
                {
                    await queue.PutAsync(new Job(id, "job"));
                }
                else
                {
                    await queue.PutManyAsync(Enumerable.Range(id, Math.Min(batch, to - id)).Select(i => new Job(i, "job")));
                }
            }
        };

        private static Func<Func<int, bool>, CancellationToken, Task> OurConsumerAsync(PostgresQueue<Job> queue, int batch) => async (take, done) =>
        {
            try
            {
                while (true)
                {
                    if (batch == 1)
                    {
                        PostgresDelivery<Job> delivery = await queue.GetAsync(done);
                        await delivery.CompleteAsync();
                        take(delivery.Item.Id);
                    }
                    else
                    {
                        IReadOnlyList<PostgresDelivery<Job>> deliveries = await queue.GetManyAsync(batch, done);
                        await queue.CompleteManyAsync(deliveries);
                        foreach (PostgresDelivery<Job> delivery in deliveries)
                        {
                            take(delivery.Item.Id);
                        }
                    }
                }
            }
            catch (OperationCanceledException) when (done.IsCancellationRequested)
            {
                // Every item was consumed; a cancelled get took nothing.
            }
        };

        private static Func<Func<int, bool>, CancellationToken, Task> OurReadLoopAsync(PostgresQueue<Job> queue) => async (take, done) =>
        {
            try
            {
                await foreach (PostgresDelivery<Job> delivery in queue.ReadAllAsync(done))
                {
                    take(delivery.Item.Id);
                }
            }
            catch (OperationCanceledException) when (done.IsCancellationRequested)
            {
                // Every item was consumed; the loop completed its last delivery before it stopped.
            }
        };

        private async Task LatencyAsync()
        {
            PostgresCoordinator getterSide = await CoordinatorAsync("bench-getter");
            PostgresCoordinator putterSide = await CoordinatorAsync("bench-putter");
            PostgresQueue<Job> getter = getterSide.CreateQueue<Job>("bench-latency");
            PostgresQueue<Job> putter = putterSide.CreateQueue<Job>("bench-latency");
            var samples = new List<double>(sizes.LatencySamples);
            for (int i = 0; i < sizes.LatencySamples + 5; i++)
            {
                Task<PostgresDelivery<Job>> waiting = getter.GetAsync(TimeSpan.FromSeconds(30)).AsTask();
                // Give the get time to find the queue empty and sleep: the put must wake it, not be found by its first call.
                await Task.Delay(20);
                long sent = Stopwatch.GetTimestamp();
                await putter.PutAsync(new Job(i, "job"));
                PostgresDelivery<Job> delivery = await waiting;
                double latency = Stopwatch.GetElapsedTime(sent).TotalMilliseconds;
                await delivery.CompleteAsync();
                if (i >= 5)
                {
                    samples.Add(latency); // the first five warm up
                }
            }

            samples.Sort();
            double Percentile(double p) => samples[Math.Min(samples.Count - 1, (int)Math.Ceiling(p * samples.Count) - 1)];
            TimeSpan poll = new PostgresCoordinatorOptions().PollInterval;
            output.WriteLine($"### Wake-up latency: put in one coordinator → a get waiting in another ({samples.Count} samples)");
            output.WriteLine();
            output.WriteLine("| p50 (ms) | p99 (ms) | max (ms) | PollInterval (ms) | p99 / PollInterval |");
            output.WriteLine("|---:|---:|---:|---:|---:|");
            output.WriteLine($"| {Percentile(0.5):0.0} | {Percentile(0.99):0.0} | {samples[^1]:0.0} | {poll.TotalMilliseconds:0} | {Percentile(0.99) / poll.TotalMilliseconds:0.000} |");
            output.WriteLine();
            output.WriteLine("From the start of PutAsync (its own transaction, committed) to the waiting GetAsync returning the item: the putter's " +
                             "coordinator sends a NOTIFY after the commit, the getter's LISTEN connection receives it and the get asks the server again.");
            output.WriteLine();
            output.WriteLine($"Load average at the end: {LoadAverage()}.");
            output.WriteLine();
        }

        /// <summary>Alternates rounds of <paramref name="ours"/> and <paramref name="theirs"/>, each run by
        /// <paramref name="tasks"/> tasks in a loop; returns each side's totals.</summary>
        private async Task<(Totals Ours, Totals Theirs)> CompareAsync(int tasks, Func<Task> ours, Func<Task> theirs)
        {
            await MeasureAsync(tasks, _ => ours, TimeSpan.FromMilliseconds(200)); // warm up both
            await MeasureAsync(tasks, _ => theirs, TimeSpan.FromMilliseconds(200));
            Totals a = default, b = default;
            for (int round = 0; round < sizes.Rounds; round++)
            {
                a += await MeasureAsync(tasks, _ => ours);
                b += await MeasureAsync(tasks, _ => theirs);
            }

            return (a, b);
        }

        private async Task<Totals> MeasureAsync(int tasks, Func<int, Func<Task>> op, TimeSpan? duration = null)
        {
            long ops = 0;
            Snapshot start = Snapshot.Take();
            long deadline = Stopwatch.GetTimestamp() + (long)((duration ?? sizes.Round).TotalSeconds * Stopwatch.Frequency);
            await Task.WhenAll(Enumerable.Range(0, tasks).Select(t => Task.Run(async () =>
            {
                Func<Task> body = op(t);
                while (Stopwatch.GetTimestamp() < deadline)
                {
                    await body();
                    Interlocked.Increment(ref ops);
                }
            })));
            return start.Until(ops);
        }

        private static string LoadAverage() =>
            File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
    }
}
