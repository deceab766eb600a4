using System.Diagnostics;
using System.Text;
using Npgsql;

namespace FanOut.Tests;

/// <summary>
/// The program's promises where a run does not go as planned: a bad <c>--postgres</c> value (a connection string the
/// demo cannot use, or a server it cannot use, included) is one clear error line with exit code 2 (never a stack
/// trace), while a small Maximum Pool Size and a plain role granted CREATE run, a stop while the API starts exits as a
/// stop and says so, a stop's report names the signal,
/// and a <c>--kill-one</c> run that killed nothing says so. Bounded in time; each step waits for output, or for the
/// program's listening socket.
/// </summary>
public sealed class ProgramFailureTests(ScaleOutDemoTests.Postgres postgres) : IClassFixture<ScaleOutDemoTests.Postgres>
{
    private static readonly TimeSpan s_bound = TimeSpan.FromMinutes(2);

    [Theory]
    [InlineData("not a connection string")]
    [InlineData("Database=fanout")] // no host: a connection string to the builder, not to a data source
    [InlineData("Host=127.0.0.1;Port=1;Timeout=5")]
    public async Task Postgres_ABadConnectionString_IsOneErrorNamingTheOption_NotAStackTrace(string connectionString)
    {
        using Process run = ProgramRun.Start("--postgres", connectionString, "--count", "10");
        (string output, string errors) = await ProgramRun.ReadToEndAsync(run, s_bound);

        run.ExitCode.Should().Be(2, "a bad value");
        errors.Should().Contain("--postgres", "the error names the option whose value is bad");
        errors.Should().NotContain("Unhandled exception").And.NotMatchRegex(@"\n\s+at \S", "a bad value is never a stack trace");
        output.Should().NotContain("Completed");
    }

    /// <summary>Settings Npgsql accepts but the demo cannot run with: the parent's PostgresCoordinator refuses
    /// multiplexing, each instance's data source (at most 16 pooled connections) refuses a larger minimum, and without
    /// pooling every call of three instances opens a connection of its own (past max_connections, or waiting on each
    /// other).</summary>
    [PostgresTheory]
    [InlineData("Multiplexing=true")]
    [InlineData("Minimum Pool Size=20")]
    [InlineData("Pooling=false")]
    public async Task Postgres_AConnectionStringTheDemoCannotUse_IsOneErrorNamingTheSetting_ExitCode2(string setting)
    {
        using Process run = ProgramRun.Start("--postgres", postgres.ConnectionString + ";" + setting, "--count", "10", "--instances", "2");
        (string output, string errors) = await ProgramRun.ReadToEndAsync(run, s_bound);

        ShouldBeRefusedBeforeTheRun(run, output, errors, "a bad --postgres value");
        errors.Should().NotContain("Unhandled exception");
        errors.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().Contain(l => l.Contains("--postgres") && l.Contains(setting.Split('=')[0]),
            "the error names the option and the setting the demo cannot use");
    }

    /// <summary>docs/scale-out.md: a Maximum Pool Size in the connection string is replaced by the parent's own pool,
    /// as by each instance's: with 1 or 2 the parent's coordinator (its LISTEN connection) and its watch of the run
    /// do not run out of connections once the run has started (a short Timeout makes a wait for one fail fast).</summary>
    [PostgresTheory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Postgres_ASmallMaximumPoolSize_IsReplacedByTheParentsOwnPool_AndTheRunCompletes(int maxPoolSize)
    {
        using Process run = ProgramRun.Start(
            "--postgres", postgres.ConnectionString + $";Maximum Pool Size={maxPoolSize};Timeout=3",
            "--count", "10", "--instances", "2", "--latency-ms", "0", "--jitter-ms", "0");
        (string output, string errors) = await ProgramRun.ReadToEndAsync(run, s_bound);

        run.ExitCode.Should().Be(0, $"the parent has a pool of its own (stdout: '{output}', stderr: '{errors}')");
        output.Should().Contain("none lost");
    }

    /// <summary>docs/scale-out.md: the session must not be read-only. A read-only session (a standby, or
    /// default_transaction_read_only) passes the CREATE check, but cannot create the run's schema: a server that cannot be
    /// used, one error line, exit code 2, before the run starts.</summary>
    [PostgresFact]
    public async Task Postgres_AReadOnlySession_IsAServerThatCannotBeUsed_ExitCode2()
    {
        var connectionString = new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { Options = "-c default_transaction_read_only=on" };
        using Process run = ProgramRun.Start("--postgres", connectionString.ConnectionString, "--count", "10", "--instances", "2");
        (string output, string errors) = await ProgramRun.ReadToEndAsync(run, s_bound);

        ShouldBeRefusedBeforeTheRun(run, output, errors, "a server that cannot be used");
        errors.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().ContainSingle()
            .Which.Should().Contain("--postgres").And.Contain("read-only");
    }

    /// <summary>docs/scale-out.md: the role needs CREATE on the database, and nothing more: a plain role granted it is
    /// no server that cannot be used, and runs the demo.</summary>
    [PostgresFact]
    public async Task Postgres_APlainRoleGrantedCreateOnTheDatabase_Runs()
    {
        string role = "fanout_create_" + Guid.NewGuid().ToString("N")[..8];
        string database = new NpgsqlConnectionStringBuilder(postgres.ConnectionString).Database!;
        await ExecuteAsync($"CREATE ROLE {role} LOGIN PASSWORD 'pw'");
        await ExecuteAsync($"GRANT CREATE ON DATABASE \"{database}\" TO {role}");
        try
        {
            var connectionString = new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { Username = role, Password = "pw" };
            using Process run = ProgramRun.Start(
                "--postgres", connectionString.ConnectionString, "--count", "50", "--instances", "2", "--latency-ms", "0", "--jitter-ms", "0");
            (string output, string errors) = await ProgramRun.ReadToEndAsync(run, s_bound);

            run.ExitCode.Should().Be(0, $"(stdout: '{output}', stderr: '{errors}')");
        }
        finally
        {
            await ExecuteAsync($"REVOKE ALL ON DATABASE \"{database}\" FROM {role}");
            await ExecuteAsync($"DROP ROLE IF EXISTS {role}");
        }
    }

    /// <summary>docs/scale-out.md: with a connection string, the role needs CREATE on the database; a role without it
    /// connects fine, but it is a server that cannot be used: one error line, exit code 2, before the run starts.</summary>
    [PostgresFact]
    public async Task Postgres_ARoleWithoutCreateOnTheDatabase_IsAServerThatCannotBeUsed_ExitCode2()
    {
        string role = "fanout_nocreate_" + Guid.NewGuid().ToString("N")[..8];
        await ExecuteAsync($"CREATE ROLE {role} LOGIN PASSWORD 'pw'");
        try
        {
            var connectionString = new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { Username = role, Password = "pw" };
            using Process run = ProgramRun.Start("--postgres", connectionString.ConnectionString, "--count", "10", "--instances", "2");
            (string output, string errors) = await ProgramRun.ReadToEndAsync(run, s_bound);

            ShouldBeRefusedBeforeTheRun(run, output, errors, "the server cannot be used with that role");
            errors.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().ContainSingle()
                .Which.Should().Contain("--postgres").And.Contain("CREATE");
        }
        finally
        {
            await ExecuteAsync($"DROP ROLE IF EXISTS {role}");
        }
    }

    [LinuxFact]
    public async Task SigTerm_WhileTheApiStarts_ExitsWith143_AndSaysSo()
    {
        using Process run = ProgramRun.Start("--count", "100");
        try
        {
            // The stop signals are registered before the API listens; the header comes after its warm-up call. A signal
            // that lands after the warm-up takes the run's own stop path, which must say the same.
            await WaitUntilListeningAsync(run.Id);
            await ProgramRun.SendSignalAsync(run.Id, "-TERM", s_bound);
            (string output, string errors) = await ProgramRun.ReadToEndAsync(run, s_bound);

            run.ExitCode.Should().Be(143, $"a stopped run exits with 128 + 15 (stdout: '{output}', stderr: '{errors}')");
            (output + errors).Should().Contain("SIGTERM", "the program says what stopped it");
        }
        finally
        {
            if (!run.HasExited)
            {
                run.Kill(entireProcessTree: true);
            }
        }
    }

    [LinuxFact]
    public async Task SigTerm_MidRun_TheReportNamesSigTerm()
    {
        using Process run = ProgramRun.Start("--count", "300", "--latency-ms", "1000", "--jitter-ms", "0", "--error-rate", "0");
        try
        {
            using var reading = new CancellationTokenSource(s_bound);
            var output = new StringBuilder();
            while (true)
            {
                string line = await run.StandardOutput.ReadLineAsync(reading.Token)
                    ?? throw new InvalidOperationException("The program ended before it reported progress: " + output);
                output.AppendLine(line);
                if (line.TrimStart().StartsWith('[') && line.Contains("in flight", StringComparison.Ordinal))
                {
                    break; // a progress line: the run is under way
                }
            }

            await ProgramRun.SendSignalAsync(run.Id, "-TERM", s_bound);
            (string rest, _) = await ProgramRun.ReadToEndAsync(run, s_bound);

            run.ExitCode.Should().Be(143);
            rest.Split('\n').Should().ContainSingle(l => l.Contains("Stopped early", StringComparison.Ordinal))
                .Which.Should().Contain("SIGTERM").And.NotContain("Ctrl+C");
        }
        finally
        {
            if (!run.HasExited)
            {
                run.Kill(entireProcessTree: true);
            }
        }
    }

    [PostgresFact]
    public async Task KillOne_WhenTheWorkRunsOutBeforeTheKill_TheReportSaysNoInstanceWasKilled()
    {
        // Three requests: the first instance's get takes them all at once, so no item ever waits, which the kill needs.
        using Process run = ProgramRun.Start("--postgres", postgres.ConnectionString, "--instances", "2", "--kill-one", "--count", "3");
        (string output, string errors) = await ProgramRun.ReadToEndAsync(run, s_bound);

        run.ExitCode.Should().Be(0, errors);
        output.Should().Match(o => o.Contains("(killed)") || o.Contains("no instance was killed"),
            "--kill-one either kills an instance or the report says it did not");
    }

    /// <summary>Waits until <paramref name="pid"/> has a listening TCP socket (the API), bounded. Another process's
    /// state gives no event to await, and the window until its warm-up ends is short: the check spins (SpinWait backs
    /// off by itself), off the test's thread.</summary>
    /// <summary>docs/scale-out.md's exit code 2 for a --postgres value or server the demo cannot use: an error, never a
    /// stack trace, and the run never started.</summary>
    private static void ShouldBeRefusedBeforeTheRun(Process run, string output, string errors, string because)
    {
        run.ExitCode.Should().Be(2, $"{because} (stdout: '{output}', stderr: '{errors}')");
        errors.Should().NotMatchRegex(@"\n\s+at \S", "a refusal is never a stack trace");
        output.Should().NotContain("FanOut --postgres", "the run does not start");
    }

    private static async Task WaitUntilListeningAsync(int pid)
    {
        if (!await Task.Run(() => SpinWait.SpinUntil(() => IsListening(pid), s_bound)))
        {
            throw new TimeoutException("The program did not start listening.");
        }
    }

    private static bool IsListening(int pid)
    {
        var inodes = new HashSet<string>();
        try
        {
            foreach (string fd in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
            {
                if (new FileInfo(fd).LinkTarget is { } target && target.StartsWith("socket:[", StringComparison.Ordinal))
                {
                    inodes.Add(target["socket:[".Length..^1]);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false; // exiting, or not ours
        }

        // /proc/net/tcp: sl local rem st ... inode (field 9); st 0A is LISTEN.
        return File.ReadLines("/proc/net/tcp").Skip(1)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Any(f => f.Length > 9 && f[3] == "0A" && inodes.Contains(f[9]));
    }

    /// <summary>Runs <paramref name="sql"/> on the test server as its superuser.</summary>
    private async Task ExecuteAsync(string sql)
    {
        await using var admin = new NpgsqlConnection(postgres.ConnectionString);
        await admin.OpenAsync();
        await using var command = new NpgsqlCommand(sql, admin);
        await command.ExecuteNonQueryAsync();
    }
}

/// <summary>A theory that needs a PostgreSQL server: skipped with <see cref="TestPostgres.SkipReason"/> where there is none.</summary>
public sealed class PostgresTheoryAttribute : TheoryAttribute
{
    public PostgresTheoryAttribute()
    {
        if (TestPostgres.SkipReason is { } reason)
        {
            Skip = reason;
        }
    }
}

/// <summary>A test that sends POSIX signals with kill(1) and inspects /proc: Linux only.</summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute()
    {
        if (!OperatingSystem.IsLinux())
        {
            Skip = "sends signals with kill(1) and inspects /proc";
        }
    }
}
