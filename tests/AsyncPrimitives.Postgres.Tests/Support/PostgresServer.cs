using Npgsql;

namespace AsyncPrimitives.Postgres.Tests.Support;

/// <summary>
/// The PostgreSQL server the tests run against, shared by every test of the <see cref="PostgresCollection"/>: the one
/// in <c>ASYNCTOOLS_POSTGRES</c>, or a <see cref="ThrowawayPostgresServer"/> started for the collection and stopped
/// when it ends (<see cref="TestPostgres"/>). Where neither can be had the tests are skipped with
/// <see cref="SkipReason"/>, unless <c>ASYNCTOOLS_REQUIRE_POSTGRES=1</c> (as in CI), which turns the skip into a failure.
/// </summary>
public sealed class PostgresServer : IAsyncLifetime
{
    private TestPostgres? _postgres;

    /// <summary>Why the Postgres tests cannot run here, or null when they can (or must: see <c>ASYNCTOOLS_REQUIRE_POSTGRES</c>).</summary>
    public static string? SkipReason => TestPostgres.SkipReason;

    /// <summary>Why the tests that restart the server cannot run here, or null when they can.</summary>
    public static string? RestartSkipReason => TestPostgres.RestartSkipReason;

    /// <summary>The connection string of the server (superuser, database <c>postgres</c>).</summary>
    public string ConnectionString => _postgres?.ConnectionString ?? throw new InvalidOperationException("The server is not started.");

    /// <summary>A new data source (its own connection pool) on the server.</summary>
    public NpgsqlDataSource CreateDataSource(Action<NpgsqlConnectionStringBuilder>? configure = null)
    {
        var builder = new NpgsqlConnectionStringBuilder(ConnectionString);
        configure?.Invoke(builder);
        return NpgsqlDataSource.Create(builder);
    }

    public async Task InitializeAsync()
    {
        if (SkipReason is not null)
        {
            return; // every test of the collection is skipped with SkipReason
        }

        _postgres = await TestPostgres.StartAsync();
        await using NpgsqlDataSource source = NpgsqlDataSource.Create(_postgres.ConnectionString);
        await using NpgsqlCommand version = source.CreateCommand("SELECT version()");
        Console.WriteLine($"PostgreSQL test server on {_postgres.ConnectionString}: {await version.ExecuteScalarAsync()}");
    }

    public async Task DisposeAsync()
    {
        if (_postgres is not null)
        {
            await _postgres.DisposeAsync();
            _postgres = null;
        }
    }

    /// <summary>Restarts the server as <c>pg_ctl restart -m fast</c> does (or, with <paramref name="crash"/>, as after a
    /// crash): every session is ended, then the server accepts connections again on the same port.</summary>
    public void Restart(bool crash = false)
    {
        ThrowawayPostgresServer server = _postgres?.Server
            ?? throw new InvalidOperationException(RestartSkipReason ?? "The server is not started.");
        server.Restart(crash);
    }
}

/// <summary>Every test that talks to the server belongs to this collection: one server, tests one at a time (a restart
/// or a killed backend must not disturb another test's timing).</summary>
[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresServer>
{
    public const string Name = "Postgres";
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
