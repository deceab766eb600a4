using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace AsyncTools.Testing;

/// <summary>
/// A throwaway PostgreSQL server: <see cref="StartAsync"/> finds the server binaries (<c>ASYNCTOOLS_POSTGRES_BIN</c>
/// when set, else <c>pg_config --bindir</c>, then <c>/usr/lib/postgresql/*/bin</c>), runs <c>initdb</c> into a temporary
/// folder (as the <c>postgres</c> user when running as root: initdb refuses root), and starts the server on 127.0.0.1
/// on a free port with <c>fsync=off</c>; <see cref="DisposeAsync"/> stops it and deletes the folder. A server whose
/// owner process was killed before it could stop it is stopped by the next <see cref="StartAsync"/>.
/// </summary>
/// <remarks>
/// One file shared by the Postgres tests (tests/AsyncPrimitives.Postgres.Tests) and the FanOut demo
/// (<c>--postgres</c> without a connection string), linked into both.
/// </remarks>
public sealed class ThrowawayPostgresServer : IAsyncDisposable
{
    /// <summary>The environment variable that names the folder of the server binaries.</summary>
    public const string BinVariable = "ASYNCTOOLS_POSTGRES_BIN";

    private const string FolderPrefix = "asynctools-pg-";

    private static readonly Lazy<Discovery> s_discovery = new(Discover);

    /// <summary>The folder holding the data folder, the log and the owner's pid; null once stopped.</summary>
    private string? _folder;

    private ThrowawayPostgresServer(string folder, string connectionString)
    {
        _folder = folder;
        ConnectionString = connectionString;
    }

    /// <summary>Why no server can be started here (no binaries, or root without a <c>postgres</c> user), or null.</summary>
    public static string? Problem => s_discovery.Value.Problem;

    /// <summary>The connection string of the server (superuser <c>postgres</c>, database <c>postgres</c>).</summary>
    public string ConnectionString { get; }

    /// <summary>Starts a new server.</summary>
    /// <exception cref="InvalidOperationException">No server can be started here (<see cref="Problem"/>), or it did not start.</exception>
    public static async Task<ThrowawayPostgresServer> StartAsync()
    {
        Discovery found = s_discovery.Value;
        if (found.Problem is { } problem)
        {
            throw new InvalidOperationException("No PostgreSQL server can be started: " + problem);
        }

        StopAbandonedServers(found);
        string folder = MakeFolder(found);
        string data = Path.Combine(folder, "data");
        await File.WriteAllTextAsync(Path.Combine(folder, "owner.pid"), Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
        try
        {
            Run(found, "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C");
            Exception? last = null;
            for (int attempt = 0; attempt < 3; attempt++)
            {
                int port = FreePort();
                try
                {
                    Run(found, "pg_ctl", "-D", data, "-l", Path.Combine(folder, "server.log"), "-w", "-t", "60", "-o",
                        $"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} -c fsync=off " +
                        "-c full_page_writes=off -c max_connections=200", "start");
                    return new ThrowawayPostgresServer(
                        folder, $"Host=127.0.0.1;Port={port};Username=postgres;Database=postgres;Include Error Detail=true");
                }
                catch (InvalidOperationException e)
                {
                    // Most likely the port was taken between picking it and binding it; try another.
                    last = e;
                }
            }

            throw new InvalidOperationException("The throwaway PostgreSQL server did not start.", last);
        }
        catch
        {
            Stop(found, folder);
            throw;
        }
    }

    /// <summary>Restarts the server as <c>pg_ctl restart -m fast</c> does (or, with <paramref name="crash"/>, as after a
    /// crash: <c>-m immediate</c>, no shutdown checkpoint, and what the WAL had not flushed is lost): every session is
    /// ended, then the server accepts connections again on the same port.</summary>
    public void Restart(bool crash = false)
    {
        string folder = _folder ?? throw new ObjectDisposedException(nameof(ThrowawayPostgresServer));

        // -l again: without it the new server would write to (and hold open) this process's output pipe.
        Run(s_discovery.Value, "pg_ctl", "-D", Path.Combine(folder, "data"), "-l", Path.Combine(folder, "server.log"),
            "-w", "-t", "60", "-m", crash ? "immediate" : "fast", "restart");
    }

    /// <summary>Stops the server and deletes its folder; idempotent.</summary>
    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _folder, null) is { } folder)
        {
            Stop(s_discovery.Value, folder);
        }

        return ValueTask.CompletedTask;
    }

    private static Discovery Discover()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
        {
            return Discovery.Missing("starting a server is implemented for Linux and macOS only");
        }

        string? bin = FindBinDirectory();
        if (bin is null)
        {
            return Discovery.Missing(
                $"no PostgreSQL server binaries (initdb, pg_ctl) in {BinVariable}, `pg_config --bindir` or " +
                "/usr/lib/postgresql/*/bin; install PostgreSQL (Debian: apt-get install postgresql)");
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

        return new Discovery(null, bin, runUser);
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

    /// <summary>Stops servers that earlier runs started and could not stop (their process was killed).</summary>
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
                Console.WriteLine($"Stopping the PostgreSQL server in {folder} failed: {e.Message}");
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

    /// <param name="Problem">Why no server can be started here, or null.</param>
    /// <param name="RunUser">The runuser program when running as root (the server programs then run as postgres).</param>
    private sealed record Discovery(string? Problem, string? BinDirectory, string? RunUser)
    {
        public static Discovery Missing(string problem) => new(problem, BinDirectory: null, RunUser: null);
    }
}
