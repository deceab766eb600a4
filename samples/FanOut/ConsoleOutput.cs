using System.Globalization;
using Spectre.Console;

namespace FanOut;

/// <summary>
/// The demo's console: a live progress bar on a terminal, plain periodic lines when output is redirected (CI, a pipe,
/// a file), and the final report.
/// </summary>
public sealed class ConsoleOutput
{
    private static readonly CultureInfo s_culture = CultureInfo.InvariantCulture;

    /// <summary>Where the plain lines go: standard output, or the writer given.</summary>
    private readonly TextWriter _plain;

    /// <summary>Whether the live progress bar and the table are drawn (a terminal, and no writer given).</summary>
    private readonly bool _interactive;

    /// <summary>Writes to the console: live on a terminal, plain lines when the output is redirected.</summary>
    public ConsoleOutput()
    {
        _plain = Console.Out;
        _interactive = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
    }

    /// <summary>Writes plain lines to <paramref name="plain"/> (e.g. a test's <see cref="StringWriter"/>).</summary>
    public ConsoleOutput(TextWriter plain)
    {
        ArgumentNullException.ThrowIfNull(plain);
        _plain = plain;
        _interactive = false;
    }

    public void WriteHeader(FanOutOptions options, FlakyApiOptions server, Uri address)
    {
        string line = string.Format(
            s_culture,
            "FanOut: {0:N0} requests to {1} (latency {2:N0} ms ± {3:N0} ms, error rate {4:P1}), at most {5} in flight, " +
            "{6} retries, batches of {7}, {8} workers",
            options.Count, address, server.Latency.TotalMilliseconds, server.Jitter.TotalMilliseconds, server.ErrorRate,
            options.Limit, options.Retries, options.BatchSize, options.Workers);
        WriteLine(line);
    }

    /// <summary>Shows <paramref name="pipeline"/>'s progress until <paramref name="run"/> completes, then returns its result.</summary>
    public async Task<FanOutResult> ShowProgressAsync(FanOutPipeline pipeline, Task<FanOutResult> run)
    {
        if (_interactive)
        {
            await AnsiConsole.Progress()
                .AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .StartAsync(async context =>
                {
                    ProgressTask bar = context.AddTask("starting", maxValue: Math.Max(1, pipeline.Snapshot().Total));
                    while (true)
                    {
                        FanOutSnapshot s = pipeline.Snapshot();
                        bar.Value = s.Completed;
                        bar.Description = string.Format(
                            s_culture,
                            "[green]{0,6:N0} ok[/] [red]{1,5:N0} failed[/] {2,6:N0}/s [grey]{3,4} in flight[/]",
                            s.Succeeded, s.Failed, s.Rate, s.InFlight);
                        if (run.IsCompleted)
                        {
                            break;
                        }

                        await Task.WhenAny(run, Task.Delay(100));
                    }
                });
        }
        else
        {
            while (!run.IsCompleted)
            {
                await Task.WhenAny(run, Task.Delay(1_000));
                WritePlainProgress(pipeline.Snapshot());
            }
        }

        return await run;
    }

    public void WriteReport(FanOutResult result, FanOutOptions options, FlakyApiOptions server, int serverPeakInFlight, string stopReason)
    {
        TimeSpan ideal = server.Latency * result.Consumed / options.Limit;
        string peakVerdict = serverPeakInFlight == options.Limit ? "equal"
            : serverPeakInFlight > options.Limit ? "EXCEEDED" : "not reached";
        var rows = new List<(string Label, string Value)>
        {
            ("Requests", F("{0:N0}", result.Requested)),
            ("Succeeded", F("{0:N0}", result.Succeeded)),
            ("Failed", F("{0:N0} (a 5xx, 408 or 429 answer, a transport error or a timeout after {1} retries; another 4xx answer at once)", result.Failed, options.Retries)),
            ("HTTP calls", F("{0:N0} ({1:N0} retries)", result.Attempts, result.Retries)),
            ("Batches", F("{0:N0} (≤ {1} results each)", result.Batches, options.BatchSize)),
            ("Wall time", F("{0:N2} s", result.WallTime.TotalSeconds)),
            ("Ideal wall time", F("{0:N2} s  (N × latency / limit = {1:N0} × {2:N0} ms / {3})", ideal.TotalSeconds, result.Consumed, server.Latency.TotalMilliseconds, options.Limit)),
            ("Throughput", F("{0:N0} requests/s", result.Throughput)),
            ("Latency p50 / p99", F("{0:N1} ms / {1:N1} ms (per HTTP call)", result.P50.TotalMilliseconds, result.P99.TotalMilliseconds)),
            ("Peak in flight", F("{0} measured by the server, {1} by the client (limit {2}: {3})", serverPeakInFlight, result.ClientPeakInFlight, options.Limit, peakVerdict)),
        };
        if (result.Cancelled)
        {
            rows.Insert(1, ("Stopped early", F("yes ({0}): {1:N0} of {2:N0} requests made; the ones in flight finished", stopReason, result.Consumed, result.Requested)));
        }

        WriteRows(rows);
    }

    public void WriteScaleOutHeader(ScaleOutOptions options, FlakyApiOptions server, Uri address, string postgres)
    {
        string global = options.GlobalLimit > 0 ? F("one PostgresSemaphore of {0} across them", options.GlobalLimit) : "no global limit";
        WriteLine(F(
            "FanOut --postgres: {0:N0} requests to {1} (latency {2:N0} ms ± {3:N0} ms, error rate {4:P1}) from {5} OS processes, " +
            "each at most {6} in flight, {7}; the work handed out through a PostgresQueue on {8}{9}",
            options.FanOut.Count, address, server.Latency.TotalMilliseconds, server.Jitter.TotalMilliseconds, server.ErrorRate,
            options.Instances, options.FanOut.Limit, global, postgres, options.KillOne ? "; one instance will be killed mid-run" : ""));
    }

    public void WriteScaleOutProgress(ScaleOutProgress progress, int serverInFlight)
    {
        if (progress.RecordedPerInstance.Count > 0)
        {
            _plain.WriteLine(F(
                "[{0,6:N1} s] {1,6:N0}/{2:N0} recorded ({3}), {4} in flight at the API",
                progress.Elapsed.TotalSeconds, progress.Recorded, progress.Total,
                string.Join(", ", progress.RecordedPerInstance.Select((n, i) => F("#{0} {1:N0}", i + 1, n))), serverInFlight));
        }

        if (progress.Event is { } happened)
        {
            _plain.WriteLine(F("[{0,6:N1} s] {1}", progress.Elapsed.TotalSeconds, happened));
        }
    }

    public void WriteScaleOutReport(ScaleOutResult result, ScaleOutOptions options, FlakyApiOptions server, int serverPeakInFlight, long serverRequests)
    {
        int unlimited = options.Instances * options.FanOut.Limit;
        string peak = options.GlobalLimit > 0
            ? F("{0} measured by the server (global limit {1}: {2}; without it up to {3} × {4} = {5})",
                serverPeakInFlight, options.GlobalLimit, serverPeakInFlight <= options.GlobalLimit ? "never exceeded" : "EXCEEDED",
                options.Instances, options.FanOut.Limit, unlimited)
            : F("{0} measured by the server (no global limit: up to {1} × {2} = {3})", serverPeakInFlight, options.Instances, options.FanOut.Limit, unlimited);
        string completed = result.Lost == 0
            ? F("{0:N0} of {1:N0} completed, none lost", result.Completed, result.Requested)
            : F("{0:N0} of {1:N0} completed, {2:N0} LOST ({3:N0} unfinished in the queue, {4:N0} dead letters)",
                result.Completed, result.Requested, result.Lost, result.Unfinished, result.DeadLetters);
        ScaleOutInstance? killed = result.Instances.FirstOrDefault(i => i.Killed);
        string twice = killed is null
            ? options.KillOne
                ? F("{0:N0} (--kill-one: no instance was killed: the work ran out before its conditions were met: a third of the work recorded, items still waiting, and the last instance running with some recorded)", result.DeliveredTwice)
                : F("{0:N0}", result.DeliveredTwice)
            : F("{0:N0} (held by instance #{1} when it was killed, delivered again with Attempt 2); {2:N0} of them recorded twice " +
                "(recorded before the kill, completed after it: at least once)", result.DeliveredTwice, killed.Number, result.RecordedTwice);
        var rows = new List<(string Label, string Value)>
        {
            ("Instances", F("{0} OS processes (pids {1}), each at most {2} in flight", result.Instances.Count,
                string.Join(", ", result.Instances.Select(i => i.ProcessId)), options.FanOut.Limit)),
            ("Completed", completed),
            ("Per instance", string.Join(", ", result.Instances.Select(i => F("#{0} {1:N0}{2}", i.Number, i.Recorded, i.Killed ? " (killed)" : "")))),
            ("Delivered twice", twice),
            ("Succeeded", F("{0:N0} ({1:N0} failed: a 5xx, 408 or 429 answer, a transport error or a timeout after {2} retries; another 4xx answer at once)", result.Succeeded, result.Completed - result.Succeeded, options.FanOut.Retries)),
            ("HTTP calls", F("{0:N0} behind the recorded results; {1:N0} received by the server", result.Calls, serverRequests)),
            ("Peak in flight", peak),
            ("Wall time", F("{0:N2} s (from putting the work, every instance ready, to the last completion)", result.WallTime.TotalSeconds)),
            ("Throughput", F("{0:N0} requests/s", result.Throughput)),
        };
        int limit = options.GlobalLimit > 0 ? options.GlobalLimit : unlimited;
        TimeSpan ideal = server.Latency * result.Requested / limit;
        rows.Insert(rows.Count - 1, ("Ideal wall time", F("{0:N2} s  (N × latency / limit = {1:N0} × {2:N0} ms / {3})",
            ideal.TotalSeconds, result.Requested, server.Latency.TotalMilliseconds, limit)));
        WriteRows(rows);
    }

    private void WriteLine(string line)
    {
        if (_interactive)
        {
            AnsiConsole.MarkupLine($"[bold]{Markup.Escape(line)}[/]");
        }
        else
        {
            _plain.WriteLine(line);
        }
    }

    private void WriteRows(List<(string Label, string Value)> rows)
    {
        if (_interactive)
        {
            var table = new Table().RoundedBorder().Title("[bold]Report[/]").AddColumn("").AddColumn("");
            table.ShowHeaders = false;
            foreach ((string label, string value) in rows)
            {
                table.AddRow(Markup.Escape(label), Markup.Escape(value));
            }

            AnsiConsole.Write(table);
        }
        else
        {
            _plain.WriteLine("Report");
            foreach ((string label, string value) in rows)
            {
                _plain.WriteLine($"  {label,-18} {value}");
            }
        }
    }

    private void WritePlainProgress(FanOutSnapshot s) =>
        _plain.WriteLine(F(
            "[{0,6:N1} s] {1,6:N0}/{2:N0} done: {3:N0} ok, {4:N0} failed, {5:N0} retries, {6} in flight, {7:N0} requests/s",
            s.Elapsed.TotalSeconds, s.Completed, s.Total, s.Succeeded, s.Failed, s.Retries, s.InFlight, s.Rate));

    private static string F(string format, params object[] args) => string.Format(s_culture, format, args);
}
