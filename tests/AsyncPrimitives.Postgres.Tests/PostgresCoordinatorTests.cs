using AsyncPrimitives.Postgres.Tests.Support;

namespace AsyncPrimitives.Postgres.Tests;

public sealed class PostgresCoordinatorTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task EnsureSchemaAsync_RacingCoordinators_AllSucceed_AndItIsIdempotent()
    {
        var members = new List<Member>();
        for (int i = 0; i < 4; i++)
        {
            members.Add(await JoinAsync(ensureSchema: false));
        }

        await Task.WhenAll(members.Select(m => Task.Run(() => m.Coordinator.EnsureSchemaAsync()))).WaitAsync(Bound);
        await members[0].Coordinator.EnsureSchemaAsync();

        (await ScalarAsync<int>("SELECT max(version) FROM @schema.schema_version")).Should().Be(1);
        await using PostgresLease lease = await members[3].Coordinator.CreateLock("job").AcquireAsync();
        lease.FencingToken.Should().BePositive();
    }

    [PostgresFact]
    public async Task Calls_BeforeEnsureSchemaAsync_SayToCallIt()
    {
        Member a = await JoinAsync(ensureSchema: false);
        var thrown = await FluentActions.Awaiting(async () => await a.Coordinator.CreateLock("job").AcquireAsync())
            .Should().ThrowAsync<PostgresCoordinationException>();
        thrown.Which.Message.Should().Contain("EnsureSchemaAsync");
        thrown.Which.InnerException.Should().BeOfType<Npgsql.PostgresException>();
    }

    [PostgresFact]
    public async Task EnsureSchemaAsync_OnANewerSchema_Refuses()
    {
        Member a = await JoinAsync();
        await ScalarAsync<int>("INSERT INTO @schema.schema_version VALUES (99) RETURNING version");
        var thrown = await FluentActions.Awaiting(() => a.Coordinator.EnsureSchemaAsync()).Should().ThrowAsync<PostgresCoordinationException>();
        thrown.Which.Message.Should().Contain("99");
    }

    [PostgresFact]
    public async Task ToString_ShowsTheSession()
    {
        Member a = await JoinAsync();
        a.Coordinator.ToString().Should().Be($"PostgresCoordinator(schema={Schema}, not connected)");
        await using (await a.Coordinator.CreateLock("job").AcquireAsync())
        {
            a.Coordinator.ToString().Should().MatchRegex($@"^PostgresCoordinator\(schema={Schema}, session=backend \d+\)$");
        }
    }

    [PostgresFact]
    public async Task DisposeAsync_ReleasesTheSessionsAdvisoryLock_AndLeavesNoSessionOnTheServer()
    {
        Member a = await JoinAsync();
        string heldByA =
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid " +
            $"WHERE l.locktype = 'advisory' AND l.granted AND s.application_name = '{a.Application}'";
        await using (await a.Coordinator.CreateLock("job").AcquireAsync())
        {
            (await ScalarAsync<long>(heldByA)).Should().Be(1, "the LISTEN connection holds the lock that names the session");
        }

        await a.Coordinator.DisposeAsync();

        (await ScalarAsync<long>(heldByA)).Should().Be(0, "closing the session gives its lock back at once, not when the pool reuses the connection");
        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }
}
