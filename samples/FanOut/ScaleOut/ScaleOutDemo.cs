using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using AsyncPrimitives.Postgres;
using Npgsql;

namespace FanOut;

/// <summary>
/// The scale-out demo's parent: puts the requests in a <c>PostgresQueue</c> (and shuts it down: nothing more will come), starts
/// <see cref="ScaleOutOptions.Instances"/> OS processes of this sample (<see cref="ScaleOutWorker"/>) that take them,
/// each with its own limit and all under one <c>PostgresSemaphore</c>, optionally kills one of them mid-run, waits until
/// the queue has nothing unfinished and the instances have exited, and reads from the database what was done.
/// </summary>
/// <remarks>
/// Every run works in a schema of its own (<c>fanout_</c> and a random suffix), dropped at the end. Each instance
/// records the result of each request in the table <see cref="EffectsTable"/> (its business effect) before it
/// completes the delivery, so a request delivered twice is visible (attempt 2), and nothing is counted by the
/// processes themselves: a killed instance's work is known from the database only.
/// </remarks>
public sealed class ScaleOutDemo
{
    /// <summary>The queue of request ids.</summary>
    public const string QueueName = "fanout-requests";

    /// <summary>The global limit.</summary>
    public const string SemaphoreName = "fanout-api";

    /// <summary>One row per recorded result: id, instance, attempt (of the delivery), succeeded, calls.</summary>
    public const string EffectsTable = "fanout_effects";

    /// <summary>One row per instance that is ready to take work (instance).</summary>
    public const string ReadyTable = "fanout_ready";

    private readonly ScaleOutOptions _options;
    private readonly string _connectionString;
    private readonly Uri _apiAddress;
    private readonly WorkerCommand _command;
    private readonly TimeProvider _time;

    /// <summary>Prepares a run.</summary>
    /// <param name="options">What to run.</param>
    /// <param name="connectionString">The PostgreSQL server the instances share (the role needs CREATE on the database,
    /// in a session that is not read-only; no multiplexing, no <c>Pooling=false</c>, and a minimum pool size of at most
    /// <see cref="ScaleOutWorker.ConnectionsPerInstance"/>; its maximum pool size is replaced by that number, which the
    /// parent, like each instance, opens at most).</param>
    /// <param name="apiAddress">The flaky API the instances call.</param>
    /// <param name="command">How to start an instance; null for this sample's program (<see cref="WorkerCommand.ThisSample"/>).</param>
    /// <param name="timeProvider">The clock for timings and the progress interval.</param>
    public ScaleOutDemo(ScaleOutOptions options, string connectionString, Uri apiAddress, WorkerCommand? command = null, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        ArgumentNullException.ThrowIfNull(apiAddress);
        options.Validate();
        _options = options;
        _connectionString = connectionString;
        _apiAddress = apiAddress;
        _command = command ?? WorkerCommand.ThisSample();
        _time = timeProvider ?? TimeProvider.System;
    }

    /// <summary>Runs the demo.</summary>
    /// <param name="progress">Called every <see cref="ScaleOutOptions.ProgressInterval"/> while the instances work.</param>
    /// <param name="cancellationToken">Stops the run: the instances are killed and the schema dropped.</param>
    /// <exception cref="InvalidOperationException">An instance failed (its error output is in the message).</exception>
    /// <exception cref="TimeoutException">The work was not done within <see cref="ScaleOutOptions.Timeout"/>.</exception>
    /// <remarks>The run's schema is dropped at the end, however the run ends. When the run failed or was stopped, that
    /// failure is thrown even if the drop fails too (the schema may then be left behind); after a run that did not
    /// fail, a failed drop is thrown.</remarks>
    public async Task<ScaleOutResult> RunAsync(Action<ScaleOutProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        string schema = "fanout_" + Guid.NewGuid().ToString("N")[..12];
        var connection = new NpgsqlConnectionStringBuilder(_connectionString)
        {
            ApplicationName = "fanout-parent",
            // The parent's own pool, as an instance has (ScaleOutWorker): its coordinator's LISTEN connection and the
            // watch's queries beside each other never run out of connections under a smaller Maximum Pool Size given.
            MaxPoolSize = ScaleOutWorker.ConnectionsPerInstance,
        };
        await using NpgsqlDataSource dataSource = NpgsqlDataSource.Create(connection);
        var instances = new List<Instance>();
        bool ranToItsEnd = false;
        try
        {
            await using var coordinator = new PostgresCoordinator(dataSource, new PostgresCoordinatorOptions { Schema = schema });
            await coordinator.EnsureSchemaAsync(cancellationToken);
            await ExecuteAsync(dataSource,
                $"CREATE TABLE {schema}.{EffectsTable} (id int NOT NULL, instance int NOT NULL, attempt int NOT NULL, " +
                $"succeeded boolean NOT NULL, calls int NOT NULL); CREATE TABLE {schema}.{ReadyTable} (instance int PRIMARY KEY)",
                cancellationToken);
            PostgresQueue<int> queue = coordinator.CreateQueue<int>(QueueName);

            long launched = _time.GetTimestamp();
            for (int number = 1; number <= _options.Instances; number++)
            {
                var settings = new ScaleOutWorkerSettings(_connectionString, schema, number, _apiAddress, _options.GlobalLimit, _options.FanOut);
                instances.Add(Instance.Start(_command, settings));
            }

            // The work is put once every instance waits for it, so they all start together (a process takes a while
            // to start), and the wall time is the work's.
            await WaitUntilReadyAsync(dataSource, schema, instances, launched, cancellationToken);
            progress?.Invoke(new ScaleOutProgress(TimeSpan.Zero, _options.FanOut.Count, 0, [], string.Format(
                CultureInfo.InvariantCulture, "{0} instances (pids {1}) ready {2:N1} s after they were started; putting the work",
                instances.Count, string.Join(", ", instances.Select(i => i.ProcessId)), _time.GetElapsedTime(launched).TotalSeconds)));
            long start = _time.GetTimestamp();
            await queue.PutManyAsync(Enumerable.Range(0, _options.FanOut.Count), cancellationToken: cancellationToken);

            // Nothing more will be put: the instances' gets take what is left (items of a killed instance included),
            // then throw QueueShutDownException, which ends them. (A get on a queue that is not shut down waits for
            // more; MapUnordered would then hold the results of calls that ended until that get returns.)
            await queue.ShutdownAsync(cancellationToken: cancellationToken);

            await WatchUntilDoneAsync(queue, dataSource, schema, instances, start, progress, cancellationToken);
            TimeSpan wallTime = _time.GetElapsedTime(start);

            // Every item is completed: the instances' gets throw QueueShutDownException, and they exit.
            await WaitForExitAsync(instances, start, cancellationToken);

            ScaleOutResult result = await ReadResultAsync(queue, dataSource, schema, instances, wallTime, cancellationToken);
            ranToItsEnd = true;
            return result;
        }
        finally
        {
            foreach (Instance instance in instances)
            {
                instance.Dispose(); // kills it if it still runs (a failure or a stop)
            }

            try
            {
                await ExecuteAsync(dataSource, $"DROP SCHEMA IF EXISTS {schema} CASCADE", CancellationToken.None);
            }
            catch (Exception) when (!ranToItsEnd)
            {
                // The run's own failure (or stop) is what is thrown: the clean-up's failure, often the same cause (the
                // server is gone, or the session is read-only), never replaces it. The schema may then be left behind.
            }
        }
    }

    /// <summary>Waits until every instance has said it is ready, failing if one ends first.</summary>
    private async Task WaitUntilReadyAsync(NpgsqlDataSource dataSource, string schema, List<Instance> instances, long launched, CancellationToken cancellationToken)
    {
        while (true)
        {
            await using (NpgsqlCommand command = dataSource.CreateCommand($"SELECT count(*)::int FROM {schema}.{ReadyTable}"))
            {
                if ((int)(await command.ExecuteScalarAsync(cancellationToken))! == instances.Count)
                {
                    return;
                }
            }

            if (instances.FirstOrDefault(i => i.Exited.IsCompleted) is { } ended)
            {
                throw new InvalidOperationException($"Instance #{ended.Number} ended before it was ready: {ended.Describe()}");
            }

            if (_time.GetElapsedTime(launched) > _options.Timeout)
            {
                throw new TimeoutException($"The instances were not ready within {_options.Timeout}.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50), _time, cancellationToken);
        }
    }

    /// <summary>Reports progress and kills an instance when asked to, until the queue has nothing unfinished.</summary>
    private async Task WatchUntilDoneAsync(
        PostgresQueue<int> queue,
        NpgsqlDataSource dataSource,
        string schema,
        List<Instance> instances,
        long start,
        Action<ScaleOutProgress>? progress,
        CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        TimeSpan left = _options.Timeout - _time.GetElapsedTime(start);
        Task join = queue.JoinAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero, stop.Token).AsTask();
        try
        {
            while (true)
            {
                // An instance ends by itself once nothing is left to deliver, while others may still finish theirs.
                Task[] running = [.. instances.Where(i => !i.Killed && !i.Exited.IsCompleted).Select(i => i.Exited)];
                if (running.Length > 0)
                {
                    await Task.WhenAny(join, Task.WhenAny(running), Task.Delay(_options.ProgressInterval, _time, cancellationToken));
                }

                cancellationToken.ThrowIfCancellationRequested();
                if (instances.FirstOrDefault(i => !i.Killed && i.Exited.IsCompleted && i.ExitCode != 0) is { } failed)
                {
                    throw new InvalidOperationException($"Instance #{failed.Number} failed: {failed.Describe()}");
                }

                (int distinct, int[] recorded) = await ReadRecordedAsync(dataSource, schema, cancellationToken);
                string? happened = null;
                Instance victim = instances[^1];
                // Killed while items still wait to be delivered: the others are still taking items, and the get that
                // finds none left gives back the items of the dead instance's session first.
                if (_options.KillOne && !victim.Killed && !victim.Exited.IsCompleted && recorded.Sum() >= _options.FanOut.Count / 3
                    && recorded[victim.Number - 1] > 0 && await queue.CountAsync(cancellationToken) > 0)
                {
                    victim.Kill();
                    happened = string.Format(CultureInfo.InvariantCulture,
                        "killed instance #{0} (pid {1}); the items it held go to the others", victim.Number, victim.ProcessId);
                }

                progress?.Invoke(new ScaleOutProgress(_time.GetElapsedTime(start), _options.FanOut.Count, distinct, recorded, happened));
                if (join.IsCompleted)
                {
                    await join; // throws TimeoutException if the work took longer than the run's timeout
                    return;
                }

                if (running.Length == 0)
                {
                    // Every instance has ended: the work is done, or no one is left to do it.
                    long unfinished = await queue.UnfinishedAsync(cancellationToken);
                    if (unfinished > 0)
                    {
                        throw new InvalidOperationException($"{unfinished} items are unfinished, and every instance has ended.");
                    }

                    return;
                }
            }
        }
        finally
        {
            await stop.CancelAsync();
            await join.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    private async Task WaitForExitAsync(List<Instance> instances, long start, CancellationToken cancellationToken)
    {
        TimeSpan left = _options.Timeout - _time.GetElapsedTime(start);
        Task all = Task.WhenAll(instances.Select(i => i.Exited));
        try
        {
            await all.WaitAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero, _time, cancellationToken);
        }
        catch (TimeoutException)
        {
            Instance late = instances.First(i => !i.Exited.IsCompleted);
            throw new TimeoutException($"Instance #{late.Number} did not exit after the queue was shut down: {late.Describe()}");
        }

        if (instances.FirstOrDefault(i => !i.Killed && i.ExitCode != 0) is { } failed)
        {
            throw new InvalidOperationException($"Instance #{failed.Number} failed: {failed.Describe()}");
        }
    }

    private async Task<ScaleOutResult> ReadResultAsync(
        PostgresQueue<int> queue,
        NpgsqlDataSource dataSource,
        string schema,
        List<Instance> instances,
        TimeSpan wallTime,
        CancellationToken cancellationToken)
    {
        var items = new ScaleOutItem[_options.FanOut.Count];
        await using (NpgsqlCommand command = dataSource.CreateCommand(
            $"SELECT id, count(*)::int, max(attempt), bool_or(succeeded), sum(calls)::int FROM {schema}.{EffectsTable} GROUP BY id"))
        await using (NpgsqlDataReader reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                items[reader.GetInt32(0)] = new ScaleOutItem(reader.GetInt32(1), reader.GetInt32(2), reader.GetBoolean(3), reader.GetInt32(4));
            }
        }

        (_, int[] recorded) = await ReadRecordedAsync(dataSource, schema, cancellationToken);
        return new ScaleOutResult
        {
            Requested = _options.FanOut.Count,
            Completed = items.Count(i => i.Effects > 0),
            Unfinished = await queue.UnfinishedAsync(cancellationToken),
            DeadLetters = await queue.DeadLetterCountAsync(cancellationToken),
            DeliveredTwice = items.Count(i => i.MaxAttempt > 1),
            RecordedTwice = items.Count(i => i.Effects > 1),
            Succeeded = items.Count(i => i.Succeeded),
            Calls = items.Sum(i => (long)i.Calls),
            Instances = [.. instances.Select(i => new ScaleOutInstance(i.Number, i.ProcessId, recorded[i.Number - 1], i.Killed, i.ExitCode))],
            Items = items,
            WallTime = wallTime,
        };
    }

    /// <summary>The requests recorded so far, each counted once (a result recorded twice is one request), and the results
    /// each instance recorded (index = instance number - 1), read in one statement (one snapshot).</summary>
    private async Task<(int Distinct, int[] PerInstance)> ReadRecordedAsync(NpgsqlDataSource dataSource, string schema, CancellationToken cancellationToken)
    {
        var recorded = new int[_options.Instances];
        int distinct = 0;
        await using NpgsqlCommand command = dataSource.CreateCommand(
            $"SELECT instance, count(*)::int FROM {schema}.{EffectsTable} GROUP BY instance " +
            $"UNION ALL SELECT 0, count(DISTINCT id)::int FROM {schema}.{EffectsTable}");
        await using NpgsqlDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            if (reader.GetInt32(0) == 0)
            {
                distinct = reader.GetInt32(1);
            }
            else
            {
                recorded[reader.GetInt32(0) - 1] = reader.GetInt32(1);
            }
        }

        return (distinct, recorded);
    }

    private static async Task ExecuteAsync(NpgsqlDataSource dataSource, string sql, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = dataSource.CreateCommand(sql);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>An instance's OS process, with its output kept for error messages.</summary>
    private sealed class Instance : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _output = new();

        private Instance(int number, Process process)
        {
            Number = number;
            _process = process;
            ProcessId = process.Id;
            Exited = process.WaitForExitAsync();
        }

        public int Number { get; }

        public int ProcessId { get; }

        /// <summary>Completes when the process has exited and its output is read.</summary>
        public Task Exited { get; }

        public bool Killed { get; private set; }

        public int ExitCode => Killed ? -1 : _process.ExitCode;

        public static Instance Start(WorkerCommand command, ScaleOutWorkerSettings settings)
        {
            var start = new ProcessStartInfo(command.FileName)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string argument in command.Arguments)
            {
                start.ArgumentList.Add(argument);
            }

            start.ArgumentList.Add(WorkerCommand.WorkerOption);
            start.ArgumentList.Add(JsonSerializer.Serialize(settings));
            var process = new Process { StartInfo = start };
            var instance = new Instance(settings.Instance, Started(process));
            process.OutputDataReceived += (_, e) => instance.Keep(e.Data);
            process.ErrorDataReceived += (_, e) => instance.Keep(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            return instance;
        }

        private static Process Started(Process process) =>
            process.Start() ? process : throw new InvalidOperationException($"{process.StartInfo.FileName} did not start.");

        /// <summary>Ends the process at once, as a crash would (no clean-up runs in it).</summary>
        public void Kill()
        {
            Killed = true;
            _process.Kill(entireProcessTree: true);
        }

        /// <summary>The exit code and the last lines the process wrote.</summary>
        public string Describe()
        {
            string code = _process.HasExited ? _process.ExitCode.ToString(CultureInfo.InvariantCulture) : "still running";
            lock (_output)
            {
                string text = _output.ToString();
                // The start (the exception and its message) and the end (where it was thrown from).
                return $"exit code {code}; output: {(text.Length > 6000 ? text[..3000] + "…" + text[^3000..] : text)}";
            }
        }

        private void Keep(string? line)
        {
            if (line is not null)
            {
                lock (_output)
                {
                    _output.AppendLine(line);
                }
            }
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }

            _process.Dispose();
        }
    }
}

/// <summary>How the demo starts an instance: a program and its arguments, to which <see cref="WorkerOption"/> and the
/// instance's settings are added.</summary>
/// <param name="FileName">The program.</param>
/// <param name="Arguments">Its first arguments.</param>
public sealed record WorkerCommand(string FileName, IReadOnlyList<string> Arguments)
{
    /// <summary>The hidden option that runs the sample as an instance, followed by its settings as JSON.</summary>
    public const string WorkerOption = "--worker";

    /// <summary>This sample's program again: its own executable when it runs from one (<c>dotnet run</c>), else the
    /// <c>dotnet</c> host with the sample's assembly (<c>dotnet FanOut.dll</c>, or a test host that loaded it).</summary>
    public static WorkerCommand ThisSample()
    {
        string assembly = typeof(ScaleOutDemo).Assembly.Location;
        string? process = Environment.ProcessPath;
        string name = Path.GetFileNameWithoutExtension(process ?? "");
        if (process is not null && name == Path.GetFileNameWithoutExtension(assembly))
        {
            return new WorkerCommand(process, []);
        }

        string host = process is not null && name == "dotnet" ? process
            : Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } path ? path
            : "dotnet";
        return new WorkerCommand(host, [assembly]);
    }
}
