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
    private readonly bool _interactive = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    public void WriteHeader(FanOutOptions options, FlakyApiOptions server, Uri address)
    {
        string line = string.Format(
            s_culture,
            "FanOut: {0:N0} requests to {1} (latency {2:N0} ms ± {3:N0} ms, error rate {4:P1}), at most {5} in flight, " +
            "{6} retries, batches of {7}, {8} workers",
            options.Count, address, server.Latency.TotalMilliseconds, server.Jitter.TotalMilliseconds, server.ErrorRate,
            options.Limit, options.Retries, options.BatchSize, options.Workers);
        if (_interactive)
        {
            AnsiConsole.MarkupLine($"[bold]{Markup.Escape(line)}[/]");
        }
        else
        {
            Console.WriteLine(line);
        }
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

    public void WriteReport(FanOutResult result, FanOutOptions options, FlakyApiOptions server, int serverPeakInFlight)
    {
        TimeSpan ideal = server.Latency * result.Consumed / options.Limit;
        string peakVerdict = serverPeakInFlight == options.Limit ? "equal"
            : serverPeakInFlight > options.Limit ? "EXCEEDED" : "not reached";
        var rows = new List<(string Label, string Value)>
        {
            ("Requests", F("{0:N0}", result.Requested)),
            ("Succeeded", F("{0:N0}", result.Succeeded)),
            ("Failed", F("{0:N0} (after {1} retries each)", result.Failed, options.Retries)),
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
            rows.Insert(1, ("Stopped early", F("yes (Ctrl+C): {0:N0} of {1:N0} requests made; the ones in flight finished", result.Consumed, result.Requested)));
        }

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
            Console.WriteLine("Report");
            foreach ((string label, string value) in rows)
            {
                Console.WriteLine($"  {label,-18} {value}");
            }
        }
    }

    private static void WritePlainProgress(FanOutSnapshot s) =>
        Console.WriteLine(F(
            "[{0,6:N1} s] {1,6:N0}/{2:N0} done: {3:N0} ok, {4:N0} failed, {5:N0} retries, {6} in flight, {7:N0} requests/s",
            s.Elapsed.TotalSeconds, s.Completed, s.Total, s.Succeeded, s.Failed, s.Retries, s.InFlight, s.Rate));

    private static string F(string format, params object[] args) => string.Format(s_culture, format, args);
}
