using System.CommandLine;
using System.CommandLine.Parsing;
using FanOut;

// Parses the options, starts the flaky API on 127.0.0.1, runs the pipeline against it with live progress, and prints
// the report. Everything the demo does lives in FlakyApiServer and FanOutPipeline; this file only wires it up.

var defaults = new FanOutOptions();
var serverDefaults = new FlakyApiOptions();

Option<int> count = IntOption("--count", "Number of requests to make.", defaults.Count, min: 0);
Option<int> limit = IntOption("--limit", "Most requests in flight at once.", defaults.Limit, min: 1);
Option<int> latencyMs = IntOption("--latency-ms", "Server latency per request, in milliseconds.", (int)serverDefaults.Latency.TotalMilliseconds, min: 0);
Option<int> jitterMs = IntOption("--jitter-ms", "Random latency added or taken away, up to this many milliseconds.", (int)serverDefaults.Jitter.TotalMilliseconds, min: 0);
Option<int> retries = IntOption("--retries", "Retries of a failed request before it counts as failed.", defaults.Retries, min: 0);
Option<int> batchSize = IntOption("--batch-size", "Most results per batch.", defaults.BatchSize, min: 1);
Option<int> batchDelayMs = IntOption("--batch-delay-ms", "Longest a batch waits for more results, in milliseconds.", (int)defaults.BatchDelay.TotalMilliseconds, min: 1);
Option<int> workers = IntOption("--workers", "Consumer workers taking batches off the queue.", defaults.Workers, min: 1);
var errorRate = new Option<double>("--error-rate")
{
    Description = "Fraction of requests the server fails with 503 (0 to 1).",
    DefaultValueFactory = _ => serverDefaults.ErrorRate,
};
errorRate.Validators.Add(r =>
{
    double value = r.GetValueOrDefault<double>();
    if (double.IsNaN(value) || value is < 0 or > 1)
    {
        r.AddError($"--error-rate must be between 0 and 1 (got {value}).");
    }
});

var root = new RootCommand("Fans out HTTP requests to a slow, flaky in-process API with AsyncIterTools and AsyncPrimitives.")
{
    count, limit, latencyMs, jitterMs, errorRate, retries, batchSize, batchDelayMs, workers,
};

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

    await using FlakyApiServer server = await FlakyApiServer.StartAsync(serverOptions, cancellationToken);
    // No MaxConnectionsPerServer: the only bound on requests in flight is the pipeline's Limit.
    using var http = new HttpClient { BaseAddress = server.BaseAddress };
    using (await http.GetAsync(new Uri("health", UriKind.Relative), cancellationToken))
    {
        // one warm-up call, outside the measured run
    }

    var pipeline = new FanOutPipeline(http, options);

    var console = new ConsoleOutput();
    console.WriteHeader(options, serverOptions, server.BaseAddress);
    FanOutResult outcome = await console.ShowProgressAsync(pipeline, pipeline.RunAsync(cancellationToken));
    console.WriteReport(outcome, options, serverOptions, server.PeakInFlight);
    return outcome.Cancelled ? 130 : 0; // 130: interrupted, as shells report Ctrl+C
});

return await parsed.InvokeAsync();

static Option<int> IntOption(string name, string description, int defaultValue, int min)
{
    var option = new Option<int>(name) { Description = description, DefaultValueFactory = _ => defaultValue };
    option.Validators.Add(r =>
    {
        int value = r.GetValueOrDefault<int>();
        if (value < min)
        {
            r.AddError($"{name} must be at least {min} (got {value}).");
        }
    });
    return option;
}
