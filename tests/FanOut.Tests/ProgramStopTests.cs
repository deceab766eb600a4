using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace FanOut.Tests;

/// <summary>
/// The program as a user runs it, stopped with SIGTERM in the middle of a scale-out run, as a container runtime, systemd
/// or a CI job's timeout stops it: it must stop its instances and the throwaway PostgreSQL server it started, say so,
/// and exit with 143, rather than leave them running. Bounded in time.
/// </summary>
public sealed partial class ProgramStopTests
{
    private static readonly TimeSpan s_bound = TimeSpan.FromMinutes(2);

    [ThrowawayPostgresFact]
    public async Task SigTerm_MidScaleOutRun_KillsTheInstances_StopsTheThrowawayServer_AndExitsWith143()
    {
        using Process run = ProgramRun.Start("--postgres", "--instances", "2", "--count", "100000", "--latency-ms", "20");
        var errors = new StringBuilder();
        run.ErrorDataReceived += (_, e) =>
        {
            lock (errors)
            {
                errors.AppendLine(e.Data);
            }
        };
        run.BeginErrorReadLine();

        int port = 0;
        int[] instances = [];
        try
        {
            // The header names the throwaway server's port; then the instances report ready, then progress.
            using var reading = new CancellationTokenSource(s_bound);
            while (instances.Length == 0 || port == 0)
            {
                string line = await run.StandardOutput.ReadLineAsync(reading.Token)
                    ?? throw new InvalidOperationException($"The program ended before its instances were ready: {errors}");
                if (PortPattern().Match(line) is { Success: true } portMatch)
                {
                    port = int.Parse(portMatch.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                }

                if (PidsPattern().Match(line) is { Success: true } pidsMatch)
                {
                    instances = [.. pidsMatch.Groups[1].Value.Split(", ").Select(p => int.Parse(p, System.Globalization.CultureInfo.InvariantCulture))];
                }
            }

            await ProgramRun.SendSignalAsync(run.Id, "-TERM", s_bound);
            await run.WaitForExitAsync().WaitAsync(s_bound);

            run.ExitCode.Should().Be(143, "a run stopped by SIGTERM exits with 128 + 15, as shells report it");
            lock (errors)
            {
                errors.ToString().Should().Contain("Stopped (SIGTERM)");
            }

            instances.Should().HaveCount(2).And.OnlyContain(pid => !IsRunning(pid), "the instances were killed with the run");
            await FluentActions.Awaiting(() => ConnectAsync(port)).Should().ThrowAsync<SocketException>("the throwaway server was stopped");
        }
        finally
        {
            // Whatever the outcome, nothing of this test stays running.
            if (!run.HasExited)
            {
                run.Kill(entireProcessTree: true);
            }

            foreach (int pid in instances.Where(IsRunning))
            {
                Process.GetProcessById(pid).Kill(entireProcessTree: true);
            }

            if (port != 0 && PostmasterOf(port) is int postmaster)
            {
                await ProgramRun.SendSignalAsync(postmaster, "-QUIT", s_bound); // a left-over server: immediate shutdown
            }
        }
    }

    private static async Task ConnectAsync(int port)
    {
        using var client = new TcpClient();
        await client.ConnectAsync("127.0.0.1", port).WaitAsync(s_bound);
    }

    /// <summary>Whether the process exists and is not a zombie (one that exited and was not reaped yet).</summary>
    private static bool IsRunning(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>The postgres server process listening on <paramref name="port"/>, found by its command line, if any.</summary>
    private static int? PostmasterOf(int port)
    {
        string needle = "\0-p\0" + port.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\0";
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out int pid))
            {
                try
                {
                    string commandLine = File.ReadAllText(Path.Combine(dir, "cmdline"));
                    if (commandLine.Contains("postgres", StringComparison.Ordinal) && commandLine.Contains(needle, StringComparison.Ordinal))
                    {
                        return pid;
                    }
                }
                catch (IOException)
                {
                    // gone meanwhile
                }
                catch (UnauthorizedAccessException)
                {
                    // not ours to read
                }
            }
        }

        return null;
    }

    [GeneratedRegex(@"Port=(\d+)")]
    private static partial Regex PortPattern();

    [GeneratedRegex(@"instances \(pids ([\d, ]+)\) ready")]
    private static partial Regex PidsPattern();
}

/// <summary>A test of the program starting its own throwaway PostgreSQL server: skipped where none can be started
/// (unless <c>ASYNCTOOLS_REQUIRE_POSTGRES=1</c>), and where there are no POSIX signals to send.</summary>
public sealed class ThrowawayPostgresFactAttribute : FactAttribute
{
    public ThrowawayPostgresFactAttribute()
    {
        if (!OperatingSystem.IsLinux())
        {
            Skip = "sends SIGTERM with kill(1) and inspects /proc";
        }
        else if (ThrowawayPostgresServer.Problem is { } problem && Environment.GetEnvironmentVariable(TestPostgres.RequireVariable) != "1")
        {
            Skip = "the program starts its own PostgreSQL server, and " + problem;
        }
    }
}
