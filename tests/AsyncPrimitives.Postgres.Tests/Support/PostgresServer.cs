using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests.Support;

/// <summary>
/// The PostgreSQL server the tests run against, shared by every test of the <see cref="PostgresCollection"/>.
/// With <c>ASYNCTOOLS_POSTGRES</c> set it is that server (a connection string); otherwise the fixture finds the server
/// binaries (<c>ASYNCTOOLS_POSTGRES_BIN</c> when set, else <c>pg_config --bindir</c>, then
/// <c>/usr/lib/postgresql/*/bin</c>), runs <c>initdb</c> into a temporary
/// folder (as the <c>postgres</c> user when running as root: initdb refuses root), starts it on 127.0.0.1 on a free
/// port with <c>fsync=off</c>, and stops it and deletes the folder when the collection ends. Where neither exists the
/// tests are skipped with <see cref="SkipReason"/>, unless <c>ASYNCTOOLS_REQUIRE_POSTGRES=1</c> (as in CI), which turns
/// the skip into a failure.
/// </summary>
public sealed class PostgresServer : IAsyncLifetime
{
    private const string ConnectionVariable = "ASYNCTOOLS_POSTGRES";
    private const string RequireVariable = "ASYNCTOOLS_REQUIRE_POSTGRES";
    private const string BinVariable = "ASYNCTOOLS_POSTGRES_BIN";
    private const string FolderPrefix = "asynctools-pg-";

    private static readonly Lazy<Discovery> s_discovery = new(Discover);

    private string? _folder;
    private string? _connectionString;

    /// <summary>Why the Postgres tests cannot run here, or null when they can (or must: see <c>ASYNCTOOLS_REQUIRE_POSTGRES</c>).</summary>
    public static string? SkipReason =>
        s_discovery.Value.Problem is { } problem && Environment.GetEnvironmentVariable(RequireVariable) != "1" ? problem : null;

    /// <summary>Why the tests that restart the server cannot run here, or null when they can.</summary>
    public static string? RestartSkipReason => SkipReason ?? (s_discovery.Value.External
        ? $"{ConnectionVariable} points at a server these tests did not start, so they cannot restart it"
        : null);

    /// <summary>The connection string of the server (superuser, database <c>postgres</c>).</summary>
    public string ConnectionString => _connectionString ?? throw new InvalidOperationException("The server is not started.");

    /// <summary>A new data source (its own connection pool) on the server.</summary>
    public NpgsqlDataSource CreateDataSource(Action<NpgsqlConnectionStringBuilder>? configure = null)
    {
        var builder = new NpgsqlConnectionStringBuilder(ConnectionString);
        configure?.Invoke(builder);
        return NpgsqlDataSource.Create(builder);
    }

    public async Task InitializeAsync()
    {
        Discovery found = s_discovery.Value;
        if (found.Problem is { } problem)
        {
            // Every test of the collection is skipped with SkipReason, unless the server is required.
            if (SkipReason is null)
            {
                throw new InvalidOperationException($"{RequireVariable}=1, but no PostgreSQL server can be used: {problem}");
            }

            return;
        }

        if (found.External)
        {
            _connectionString = Environment.GetEnvironmentVariable(ConnectionVariable)!;
            return;
        }

        StopAbandonedServers(found);
        _folder = MakeFolder(found);
        string data = Path.Combine(_folder, "data");
        await File.WriteAllTextAsync(Path.Combine(_folder, "owner.pid"), Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
        Run(found, "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C");

        Exception? last = null;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            int port = FreePort();
            try
            {
                Run(found, "pg_ctl", "-D", data, "-l", Path.Combine(_folder, "server.log"), "-w", "-t", "60", "-o",
                    $"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={_folder} -c fsync=off " +
                    "-c full_page_writes=off -c max_connections=200", "start");
                _connectionString = $"Host=127.0.0.1;Port={port};Username=postgres;Database=postgres;Include Error Detail=true";
                break;
            }
            catch (InvalidOperationException e)
            {
                // Most likely the port was taken between picking it and binding it; try another.
                last = e;
            }
        }

        if (_connectionString is null)
        {
            throw new InvalidOperationException("The PostgreSQL test server did not start.", last);
        }

        await using NpgsqlDataSource source = NpgsqlDataSource.Create(_connectionString);
        await using NpgsqlCommand version = source.CreateCommand("SELECT version()");
        Console.WriteLine($"PostgreSQL test server on {_connectionString}: {await version.ExecuteScalarAsync()}");
    }

    public Task DisposeAsync()
    {
        if (_folder is not null)
        {
            Stop(s_discovery.Value, _folder);
            _folder = null;
        }

        return Task.CompletedTask;
    }

    /// <summary>Restarts the server as <c>pg_ctl restart -m fast</c> does: every session is ended, then the server
    /// accepts connections again on the same port.</summary>
    public void Restart()
    {
        if (_folder is null)
        {
            throw new InvalidOperationException(RestartSkipReason ?? "The server is not started.");
        }

        // -l again: without it the new server would write to (and hold open) this process's output pipe.
        Run(s_discovery.Value, "pg_ctl", "-D", Path.Combine(_folder, "data"), "-l", Path.Combine(_folder, "server.log"),
            "-w", "-t", "60", "-m", "fast", "restart");
    }

    private static Discovery Discover()
    {
        if (!string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(ConnectionVariable)))
        {
            return new Discovery(null, External: true, BinDirectory: null, RunUser: null);
        }

        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
        {
            return Discovery.Missing($"no {ConnectionVariable} connection string, and starting a server is implemented for Linux and macOS only");
        }

        string? bin = FindBinDirectory();
        if (bin is null)
        {
            return Discovery.Missing(
                $"no {ConnectionVariable} connection string, and no PostgreSQL server binaries (initdb, pg_ctl) in {BinVariable}, " +
                "`pg_config --bindir` or /usr/lib/postgresql/*/bin; install PostgreSQL (Debian: apt-get install postgresql)");
        }

        string? runUser = null;
        if (Environment.UserName == "root")
        {
            runUser = new[] { "/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser" }.FirstOrDefault(File.Exists);
            if (runUser is null || !UserExists("postgres"))
            {
                return Discovery.Missing("running as root, and initdb refuses root, but there is no `postgres` user or no runuser to switch to it");
            }
        }

        return new Discovery(null, External: false, bin, runUser);
    }

    private static string? FindBinDirectory()
    {
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable(BinVariable) is { Length: > 0 } chosen)
        {
            // The one place to look, when set (a server installed where the search below would not find it).
            return IsBinDirectory(chosen) ? chosen : null;
        }

        try
        {
            using var process = Process.Start(new ProcessStartInfo("pg_config", "--bindir")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            });
            if (process is not null)
            {
                string output = process.StandardOutput.ReadToEnd().Trim();
                process.WaitForExit();
                if (process.ExitCode == 0 && output.Length > 0)
                {
                    candidates.Add(output);
                }
            }
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // No pg_config on the PATH.
        }

        if (Directory.Exists("/usr/lib/postgresql"))
        {
            candidates.AddRange(Directory.GetDirectories("/usr/lib/postgresql")
                .OrderByDescending(d => int.TryParse(Path.GetFileName(d), out int v) ? v : 0)
                .Select(d => Path.Combine(d, "bin")));
        }

        return candidates.FirstOrDefault(IsBinDirectory);
    }

    private static bool IsBinDirectory(string directory) =>
        File.Exists(Path.Combine(directory, "initdb")) && File.Exists(Path.Combine(directory, "pg_ctl"));

    private static bool UserExists(string name) =>
        File.Exists("/etc/passwd") && File.ReadLines("/etc/passwd").Any(line => line.StartsWith(name + ":", StringComparison.Ordinal));

    private static string MakeFolder(Discovery found)
    {
        if (found.RunUser is null)
        {
            return Directory.CreateTempSubdirectory(FolderPrefix).FullName;
        }

        // Made by the postgres user itself, so the data folder below it is theirs (initdb requires that).
        return Run(found, "/usr/bin/mktemp", "-d", Path.Combine(Path.GetTempPath(), FolderPrefix + "XXXXXXXX")).Trim();
    }

    /// <summary>Stops servers that earlier test runs started and could not stop (their process was killed).</summary>
    private static void StopAbandonedServers(Discovery found)
    {
        foreach (string folder in Directory.GetDirectories(Path.GetTempPath(), FolderPrefix + "*"))
        {
            string ownerFile = Path.Combine(folder, "owner.pid");
            if (File.Exists(ownerFile) && int.TryParse(File.ReadAllText(ownerFile), out int owner) && !IsRunning(owner))
            {
                Stop(found, folder);
            }
        }
    }

    private static bool IsRunning(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    private static void Stop(Discovery found, string folder)
    {
        string data = Path.Combine(folder, "data");
        if (File.Exists(Path.Combine(data, "postmaster.pid")))
        {
            try
            {
                Run(found, "pg_ctl", "-D", data, "-w", "-t", "60", "-m", "immediate", "stop");
            }
            catch (InvalidOperationException e)
            {
                Console.WriteLine($"Stopping the PostgreSQL test server in {folder} failed: {e.Message}");
            }
        }

        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException e)
        {
            Console.WriteLine($"Deleting {folder} failed: {e.Message}");
        }
        catch (UnauthorizedAccessException e)
        {
            Console.WriteLine($"Deleting {folder} failed: {e.Message}");
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Runs a server program (from the bin directory unless a path is given), as the postgres user when
    /// running as root; returns its output, or throws with it when the program fails.</summary>
    private static string Run(Discovery found, string program, params string[] arguments)
    {
        string path = Path.IsPathRooted(program) ? program : Path.Combine(found.BinDirectory!, program);
        var start = new ProcessStartInfo
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (found.RunUser is not null)
        {
            start.FileName = found.RunUser;
            foreach (string a in new[] { "-u", "postgres", "--", path })
            {
                start.ArgumentList.Add(a);
            }
        }
        else
        {
            start.FileName = path;
        }

        foreach (string a in arguments)
        {
            start.ArgumentList.Add(a);
        }

        using Process process = Process.Start(start) ?? throw new InvalidOperationException($"{program} did not start.");
        Task<string> error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} exited with {process.ExitCode}: {output}{error.Result}");
        }

        return output;
    }

    /// <param name="RunUser">The runuser program when running as root (the server programs then run as postgres).</param>
    private sealed record Discovery(string? Problem, bool External, string? BinDirectory, string? RunUser)
    {
        public static Discovery Missing(string problem) => new(problem, External: false, BinDirectory: null, RunUser: null);
    }
}

/// <summary>Every test that talks to the server belongs to this collection: one server, tests one at a time (a restart
/// or a killed backend must not disturb another test's timing).</summary>
[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresServer>
{
    public const string Name = "Postgres";
}

/// <summary>A test that needs the server: skipped with <see cref="PostgresServer.SkipReason"/> where there is none.</summary>
public sealed class PostgresFactAttribute : FactAttribute
{
    public PostgresFactAttribute()
    {
        if (PostgresServer.SkipReason is { } reason)
        {
            Skip = reason;
        }
    }

}

/// <summary>A test that restarts the server, so it needs one these tests started: skipped with
/// <see cref="PostgresServer.RestartSkipReason"/> otherwise.</summary>
public sealed class PostgresRestartFactAttribute : FactAttribute
{
    public PostgresRestartFactAttribute()
    {
        if (PostgresServer.RestartSkipReason is { } reason)
        {
            Skip = reason;
        }
    }
}

/// <summary>A theory that needs the server: skipped with <see cref="PostgresServer.SkipReason"/> where there is none.</summary>
public sealed class PostgresTheoryAttribute : TheoryAttribute
{
    public PostgresTheoryAttribute()
    {
        if (PostgresServer.SkipReason is { } reason)
        {
            Skip = reason;
        }
    }
}
