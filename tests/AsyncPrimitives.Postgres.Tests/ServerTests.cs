using AsyncPrimitives.Postgres.Tests.Support;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>The test server itself: the other tests rely on it accepting connections and on restarting it.</summary>
[Collection(PostgresCollection.Name)]
public sealed class ServerTests(PostgresServer server)
{
    [PostgresFact]
    public async Task Server_AcceptsConnections()
    {
        await using NpgsqlDataSource source = server.CreateDataSource();
        await using NpgsqlCommand command = source.CreateCommand("SELECT 1 + 1");
        (await command.ExecuteScalarAsync()).Should().Be(2);
    }

    [PostgresRestartFact]
    public async Task Restart_EndsSessions_AndAcceptsNewOnes()
    {
        await using NpgsqlDataSource source = server.CreateDataSource();
        await using NpgsqlConnection before = await source.OpenConnectionAsync();
        await using (NpgsqlCommand fsync = new("SHOW fsync", before))
        {
            (await fsync.ExecuteScalarAsync()).Should().Be("off", "the test server trades durability for speed");
        }

        server.Restart();

        await using (NpgsqlCommand ping = new("SELECT 1", before))
        {
            await FluentActions.Awaiting(() => ping.ExecuteScalarAsync()).Should().ThrowAsync<NpgsqlException>();
        }

        await using NpgsqlCommand after = source.CreateCommand("SELECT 1");
        (await after.ExecuteScalarAsync()).Should().Be(1);
    }
}
