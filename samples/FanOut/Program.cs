using System.CommandLine;
using System.Globalization;
using System.CommandLine.Parsing;
using System.Text.Json;
using AsyncTools.Testing;
using AsyncPrimitives.Postgres;
using FanOut;
using Npgsql;

// Parses the options, starts the flaky API on 127.0.0.1, runs the pipeline against it with live progress, and prints
// the report. Everything the demo does lives in FlakyApiServer and FanOutPipeline; this file only wires it up.
// With --postgres, the same requests are made by --instances OS processes of this program (ScaleOutDemo), each
// started with the hidden --worker option (ScaleOutWorker).

var defaults = new FanOutOptions();
var serverDefaults = new FlakyApiOptions();

Option<int> count = IntOption("--count", "Number of requests to make.", defaults.Count, min: 0);
Option<int> limit = IntOption("--limit", "Most requests in flight at once.", defaults.Limit, min: 1);
Option<int> latencyMs = IntOption("--latency-ms", "Server latency per request, in milliseconds.", (int)serverDefaults.Latency.TotalMilliseconds, min: 0);
Option<int> jitterMs = IntOption("--jitter-ms", "Random latency added or taken away, up to this many milliseconds.", (int)serverDefaults.Jitter.TotalMilliseconds, min: 0);
Option<int> retries = IntOption("--retries", "Retries of a request after a 5xx, 408 or 429 answer, a transport error or a timeout, before it counts as failed (another 4xx answer fails at once).", defaults.Retries, min: 0);
Option<int> batchSize = IntOption("--batch-size", "Most results per batch.", defaults.BatchSize, min: 1);
Option<int> batchDelayMs = IntOption("--batch-delay-ms", "Longest a batch waits for more results, in milliseconds.", (int)defaults.BatchDelay.TotalMilliseconds, min: 1);
Option<int> workers = IntOption("--workers", "Consumer workers taking batches off the queue.", defaults.Workers, min: 1);
Option<double> errorRate = DoubleOption("--error-rate", "Fraction of requests the server fails with 503 (0 to 1).", serverDefaults.ErrorRate, min: 0, max: 1);
Option<string?> postgres = new("--postgres")
{
    Description = "Run the requests from --instances OS processes that share a PostgreSQL queue and semaphore. " +
        "Takes a connection string; without one, a throwaway server is started (needs the PostgreSQL server binaries).",
    Arity = ArgumentArity.ZeroOrOne,
};
Option<int> instances = IntOption("--instances", "With --postgres: OS processes of this program that share the work.", 1, min: 1);
Option<int> globalLimit = IntOption("--global-limit", "With --postgres: most requests in flight across every instance (default: --limit; 0 for none).", defaultValue: null, min: 0);
Option<bool> killOne = new("--kill-one") { Description = "With --postgres: kill one instance mid-run; the items it held are delivered again." };
Option<string?> worker = new(WorkerCommand.WorkerOption) { Hidden = true }; // an instance started by --postgres

var root = new RootCommand("Fans out HTTP requests to a slow, flaky in-process API with AsyncIterTools and AsyncPrimitives.")
{
    count, limit, latencyMs, jitterMs, errorRate, retries, batchSize, batchDelayMs, workers, postgres, instances, globalLimit,
    killOne, worker,
};
root.Validators.Add(command =>
{
    if (command.GetResult(postgres) is null)
    {
        foreach (Option needsPostgres in new Option[] { instances, globalLimit, killOne })
        {
            if (command.GetResult(needsPostgres) is { Implicit: false })
            {
                command.AddError($"{needsPostgres.Name} needs --postgres.");
            }
        }
    }
    else if (command.GetValue(postgres) is { Length: > 0 } connectionString && ConnectionStringProblem(connectionString) is { } problem)
    {
        command.AddError($"--postgres: {problem}");
    }
    else if (command.GetValue(killOne) && command.GetValue(instances) < 2)
    {
        command.AddError("--kill-one needs --instances 2 or more, so that another instance takes over the work.");
    }
});

ParseResult parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    foreach (ParseError error in parsed.Errors)
    {
        await Console.Error.WriteLineAsync($"error: {error.Message}");
    }

    await Console.Error.WriteLineAsync("Run with --help to see the options.");
    return 2;
}

root.SetAction(async (result, cancellationToken) =>
{
    var serverOptions = new FlakyApiOptions
    {
        Latency = TimeSpan.FromMilliseconds(result.GetValue(latencyMs)),
        Jitter = TimeSpan.FromMilliseconds(result.GetValue(jitterMs)),
        ErrorRate = result.GetValue(errorRate),
    };
    var options = new FanOutOptions
    {
        Count = result.GetValue(count),
        Limit = result.GetValue(limit),
        Retries = result.GetValue(retries),
        BatchSize = result.GetValue(batchSize),
        BatchDelay = TimeSpan.FromMilliseconds(result.GetValue(batchDelayMs)),
        Workers = result.GetValue(workers),
    };

    if (result.GetValue(worker) is { } settings)
    {
        await ScaleOutWorker.RunAsync(JsonSerializer.Deserialize<ScaleOutWorkerSettings>(settings)!, cancellationToken);
        return 0;
    }

    if (result.GetResult(postgres) is not null)
    {
        var scaleOut = new ScaleOutOptions
        {
            FanOut = options,
            Instances = result.GetValue(instances),
            GlobalLimit = result.GetResult(globalLimit) is { Implicit: false } ? result.GetValue(globalLimit) : options.Limit,
            KillOne = result.GetValue(killOne),
        };
        return await RunScaleOutAsync(scaleOut, serverOptions, result.GetValue(postgres), cancellationToken);
    }

    // Ctrl+C (or SIGTERM) cancels the run, which then reports what was done; a second one ends the process at once.
    using var stop = new StopSignals(cancellationToken);
    cancellationToken = stop.Token;

    bool started = false;
    try
    {
        await using FlakyApiServer server = await FlakyApiServer.StartAsync(serverOptions, cancellationToken);
        // No MaxConnectionsPerServer: the only bound on requests in flight is the pipeline's Limit.
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using (await http.GetAsync(new Uri("health", UriKind.Relative), cancellationToken))
        {
            // one warm-up call, outside the measured run
        }

        started = true;
        var pipeline = new FanOutPipeline(http, options);
        var console = new ConsoleOutput();
        console.WriteHeader(options, serverOptions, server.BaseAddress);
        FanOutResult outcome = await console.ShowProgressAsync(pipeline, pipeline.RunAsync(cancellationToken));
        console.WriteReport(outcome, options, serverOptions, server.PeakInFlight, stop.Reason);
        return outcome.Cancelled ? stop.ExitCode : 0;
    }
    catch (OperationCanceledException) when (stop.Token.IsCancellationRequested && !started)
    {
        // A stop while the API starts or warms up (the run itself reports a stop in its report).
        await Console.Error.WriteLineAsync($"Stopped ({stop.Reason}) before the run started: no request was made.");
        return stop.ExitCode;
    }
});

return await parsed.InvokeAsync();

// The scale-out demo: the flaky API in this process, the instances in their own; a throwaway PostgreSQL server when no
// connection string is given. Ctrl+C or SIGTERM kills the instances and cleans up (the throwaway server included).
static async Task<int> RunScaleOutAsync(ScaleOutOptions options, FlakyApiOptions serverOptions, string? connectionString, CancellationToken cancellationToken)
{
    using var stop = new StopSignals(cancellationToken);
    try
    {
        var console = new ConsoleOutput();
        ThrowawayPostgresServer? throwaway = null;
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            if (ThrowawayPostgresServer.Problem is { } problem)
            {
                await Console.Error.WriteLineAsync($"error: --postgres has no connection string, and no throwaway server can be started: {problem}");
                return 2;
            }

            throwaway = await ThrowawayPostgresServer.StartAsync();
            connectionString = throwaway.ConnectionString;
        }

        await using (throwaway)
        {
            if (await ServerProblemAsync(connectionString, stop.Token) is { } unusable)
            {
                await Console.Error.WriteLineAsync($"error: --postgres: the server cannot be used: {unusable}");
                return 2;
            }

            await using FlakyApiServer server = await FlakyApiServer.StartAsync(serverOptions, stop.Token);
            console.WriteScaleOutHeader(options, serverOptions, server.BaseAddress, throwaway is null ? "the server given" : "a throwaway server on " + connectionString);
            var demo = new ScaleOutDemo(options, connectionString, server.BaseAddress);
            ScaleOutResult outcome = await demo.RunAsync(p => console.WriteScaleOutProgress(p, server.InFlight), stop.Token);
            console.WriteScaleOutReport(outcome, options, serverOptions, server.PeakInFlight, server.Requests);
            return outcome.Lost == 0 ? 0 : 1;
        }
    }
    catch (Exception) when (stop.Token.IsCancellationRequested)
    {
        // Whatever the stop surfaced as (the cancellation, or an instance that ended on the same signal first).
        await Console.Error.WriteLineAsync($"Stopped ({stop.Reason}): the instances were killed and the run's schema dropped.");
        return stop.ExitCode;
    }
    catch (Exception e) when (e is NpgsqlException or PostgresCoordinationException or InvalidOperationException or TimeoutException)
    {
        // The server failed mid-run, an instance failed, the throwaway server could not start, or the work took longer
        // than the run's timeout.
        await Console.Error.WriteLineAsync($"error: the run failed: {e.Message}");
        return 1;
    }
}

// Options parse their own text, so a bad value is one clear line on stderr (exit code 2), never a stack trace.
// A null default shows none in --help (the option's default is another's value: the caller reads it when not given).
static Option<int> IntOption(string name, string description, int? defaultValue, int min) => new(name)
{
    Description = description,
    DefaultValueFactory = defaultValue is int value ? _ => value : null,
    CustomParser = r =>
    {
        string text = r.Tokens.Count == 1 ? r.Tokens[0].Value : "";
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value))
        {
            r.AddError($"{name} must be a whole number (got '{text}').");
        }
        else if (value < min)
        {
            r.AddError($"{name} must be at least {min} (got {value}).");
        }

        return value;
    },
};

static Option<double> DoubleOption(string name, string description, double defaultValue, double min, double max) => new(name)
{
    Description = description,
    DefaultValueFactory = _ => defaultValue,
    CustomParser = r =>
    {
        string text = r.Tokens.Count == 1 ? r.Tokens[0].Value : "";
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !double.IsFinite(value))
        {
            r.AddError($"{name} must be a number (got '{text}').");
        }
        else if (value < min || value > max)
        {
            r.AddError(string.Create(CultureInfo.InvariantCulture, $"{name} must be between {min} and {max} (got {value})."));
        }

        return value;
    },
};

// Why a --postgres value is no connection string the demo can use, or null when it is one (checked as a data source is
// made, without connecting: whether its server answers is seen by ServerProblemAsync). Besides what Npgsql refuses, the
// settings under which the parent's coordinator or an instance's data source (ScaleOutWorker) would throw once the run
// has started, or under which its connections would not be pooled. (A Maximum Pool Size needs no check: the parent
// and each instance replace it with their own.)
static string? ConnectionStringProblem(string text)
{
    NpgsqlConnectionStringBuilder settings;
    try
    {
        using NpgsqlDataSource source = NpgsqlDataSource.Create(text);
        settings = new NpgsqlConnectionStringBuilder(text);
    }
    catch (ArgumentException e)
    {
        return $"not a connection string: {e.Message}";
    }

    if (settings.Multiplexing)
    {
        return "Multiplexing=true cannot be used: each PostgresCoordinator needs a connection of its own for LISTEN.";
    }

    if (!settings.Pooling)
    {
        return string.Create(CultureInfo.InvariantCulture,
            $"Pooling=false cannot be used: each process shares at most {ScaleOutWorker.ConnectionsPerInstance} pooled connections among its calls; without a pool every call opens a connection of its own.");
    }

    if (settings.MinPoolSize > ScaleOutWorker.ConnectionsPerInstance)
    {
        return string.Create(CultureInfo.InvariantCulture,
            $"Minimum Pool Size={settings.MinPoolSize} cannot be used: each instance opens at most {ScaleOutWorker.ConnectionsPerInstance} pooled connections (Maximum Pool Size).");
    }

    return null;
}

// Why the server of a connection string cannot be used (it does not answer, refuses the login, the role may not create
// the run's schema, the session is read-only, ...), or null.
static async Task<string?> ServerProblemAsync(string connectionString, CancellationToken cancellationToken)
{
    try
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var canCreate = new NpgsqlCommand(
            "SELECT has_database_privilege(current_database(), 'CREATE'), current_user, current_database(), " +
            "pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'", connection);
        await using NpgsqlDataReader reader = await canCreate.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        if (reader.GetBoolean(3) || reader.GetBoolean(4))
        {
            // CREATE is granted on a standby too, and with default_transaction_read_only; neither can write.
            return $"the session is read-only ({(reader.GetBoolean(3) ? "the server is a standby" : "default_transaction_read_only is on")}): the run creates a schema of its own and writes to it.";
        }

        return reader.GetBoolean(0) ? null
            : $"the role {reader.GetString(1)} has no CREATE privilege on the database {reader.GetString(2)} (the run works in a schema of its own, which it creates).";
    }
    catch (NpgsqlException e)
    {
        return e.Message;
    }
}
