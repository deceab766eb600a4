namespace AsyncTools.Testing;

/// <summary>
/// The PostgreSQL server of the tests that need one: the server in <c>ASYNCTOOLS_POSTGRES</c> (a connection string)
/// when set, otherwise a <see cref="ThrowawayPostgresServer"/>. Where neither can be had, the tests are skipped with
/// <see cref="SkipReason"/>, unless <c>ASYNCTOOLS_REQUIRE_POSTGRES=1</c> (as in CI), which turns the skip into a failure.
/// </summary>
internal sealed class TestPostgres : IAsyncDisposable
{
    public const string ConnectionVariable = "ASYNCTOOLS_POSTGRES";
    public const string RequireVariable = "ASYNCTOOLS_REQUIRE_POSTGRES";

    private TestPostgres(string connectionString, ThrowawayPostgresServer? server)
    {
        ConnectionString = connectionString;
        Server = server;
    }

    /// <summary>The connection string of <c>ASYNCTOOLS_POSTGRES</c>, or null when it is not set.</summary>
    public static string? ExternalConnectionString =>
        Environment.GetEnvironmentVariable(ConnectionVariable) is { } value && !string.IsNullOrWhiteSpace(value) ? value : null;

    /// <summary>Why no server can be used here, or null.</summary>
    public static string? Problem => ExternalConnectionString is null && ThrowawayPostgresServer.Problem is { } problem
        ? $"no {ConnectionVariable} connection string, and {problem}"
        : null;

    /// <summary>Why the tests that need a server cannot run here, or null when they can (or must: see <c>ASYNCTOOLS_REQUIRE_POSTGRES</c>).</summary>
    public static string? SkipReason => Problem is { } problem && Environment.GetEnvironmentVariable(RequireVariable) != "1" ? problem : null;

    /// <summary>Why the tests that restart the server cannot run here, or null when they can.</summary>
    public static string? RestartSkipReason => SkipReason ?? (ExternalConnectionString is not null
        ? $"{ConnectionVariable} points at a server these tests did not start, so they cannot restart it"
        : null);

    /// <summary>The connection string of the server (a superuser).</summary>
    public string ConnectionString { get; }

    /// <summary>The server these tests started, or null when it is the one in <c>ASYNCTOOLS_POSTGRES</c>.</summary>
    public ThrowawayPostgresServer? Server { get; }

    /// <summary>Gets the server: <c>ASYNCTOOLS_POSTGRES</c>, or a throwaway one started now.</summary>
    /// <exception cref="InvalidOperationException">No server can be used here (call it only where <see cref="SkipReason"/> is null).</exception>
    public static async Task<TestPostgres> StartAsync()
    {
        if (Problem is { } problem)
        {
            throw new InvalidOperationException($"{RequireVariable}=1, but no PostgreSQL server can be used: {problem}");
        }

        if (ExternalConnectionString is { } external)
        {
            return new TestPostgres(external, server: null);
        }

        ThrowawayPostgresServer server = await ThrowawayPostgresServer.StartAsync();
        return new TestPostgres(server.ConnectionString, server);
    }

    /// <summary>Stops the server if these tests started it.</summary>
    public ValueTask DisposeAsync() => Server?.DisposeAsync() ?? ValueTask.CompletedTask;
}
