using Npgsql;

namespace FanOut.Tests;

/// <summary>
/// The scale-out demo end to end: three OS processes of the sample share one PostgresQueue of work and one
/// PostgresSemaphore as the global limit, against the flaky API in this process. The server measures the requests in
/// flight across all of them; the database says what was done. Bounded in time; skipped where no PostgreSQL server can
/// be had (unless ASYNCTOOLS_REQUIRE_POSTGRES=1).
/// </summary>
public sealed class ScaleOutDemoTests(ScaleOutDemoTests.Postgres postgres) : IClassFixture<ScaleOutDemoTests.Postgres>
{
    private const int Count = 300;
    private const int Instances = 3;
    private const int LocalLimit = 8;
    private const int GlobalLimit = 8;
    private static readonly TimeSpan s_bound = TimeSpan.FromMinutes(3);

    [PostgresFact]
    public async Task RunAsync_ThreeProcesses_StayWithinTheGlobalLimitAndCompleteEveryItemOnce()
    {
        await using FlakyApiServer server = await StartServerAsync();

        ScaleOutResult result = await RunAsync(server, killOne: false);

        server.PeakInFlight.Should().BeInRange(1, GlobalLimit,
            $"the server never sees more than the global limit in flight, where {Instances} × {LocalLimit} could be");
        server.InFlight.Should().Be(0);
        ShouldBeSeparateProcessesThatShared(result);
        result.Instances.Should().OnlyContain(i => !i.Killed && i.ExitCode == 0);

        result.Completed.Should().Be(Count);
        result.Lost.Should().Be(0);
        result.Unfinished.Should().Be(0);
        result.DeadLetters.Should().Be(0);
        result.Items.Should().OnlyContain(i => i.Effects == 1 && i.MaxAttempt == 1, "without a crash, each item is delivered and recorded once");
        result.DeliveredTwice.Should().Be(0);
        result.Instances.Sum(i => i.Recorded).Should().Be(Count);
        Enumerable.Range(0, Count).Select(server.HitsFor).Should().Equal(result.Items.Select(i => i.Calls),
            "every HTTP call the server saw for an id is behind that id's one recorded result");
        server.Requests.Should().Be(result.Calls);
    }

    [PostgresFact]
    public async Task RunAsync_WhenOneProcessIsKilled_ItsItemsAreDeliveredAgainAndNoneIsLost()
    {
        await using FlakyApiServer server = await StartServerAsync();
        var progress = new List<ScaleOutProgress>();

        ScaleOutResult result = await RunAsync(server, killOne: true, progress.Add);

        server.PeakInFlight.Should().BeInRange(1, GlobalLimit, "a killed holder's permits are freed, never duplicated");
        ShouldBeSeparateProcessesThatShared(result);
        ScaleOutInstance killed = result.Instances.Should().ContainSingle(i => i.Killed).Subject;
        killed.Number.Should().Be(Instances);
        killed.Recorded.Should().BeGreaterThan(0, "it was killed mid-run, after it had done some work");
        result.Instances.Where(i => !i.Killed).Should().OnlyContain(i => i.ExitCode == 0);

        result.Completed.Should().Be(Count);
        result.Lost.Should().Be(0);
        result.Unfinished.Should().Be(0);
        result.DeadLetters.Should().Be(0);
        result.DeliveredTwice.Should().BeGreaterThan(0, "the killed instance held leased items, which went to the others");
        result.Items.Should().OnlyContain(i => i.Effects >= 1, "every item's result was recorded");
        result.Items.Should().NotContain(i => i.Effects > 1 && i.MaxAttempt < 2,
            "an item is recorded twice only when it was delivered again (at least once), never twice from one delivery");
        result.Items.Should().OnlyContain(i => i.MaxAttempt <= 2, "one crash delivers an item at most once more");
        result.RecordedTwice.Should().BeLessThanOrEqualTo(result.DeliveredTwice);
        result.Instances.Sum(i => i.Recorded).Should().Be(Count + result.Items.Sum(i => i.Effects - 1));

        // The progress counts requests recorded, each once: never past the total, where the instances' counts add up to
        // more when a result was recorded twice.
        progress.Should().NotBeEmpty();
        progress.Should().OnlyContain(p => p.Total == Count && p.Recorded <= Count && p.Recorded <= p.RecordedPerInstance.Sum());
        progress.Select(p => p.Recorded).Should().BeInAscendingOrder("a recorded request stays recorded");
    }

    /// <summary>RunAsync's remarks: the run's schema is dropped however the run ends, and a drop that fails as well never
    /// replaces the run's own failure. In a read-only session the schema cannot be made, nor dropped.</summary>
    [PostgresFact]
    public async Task RunAsync_WhenTheRunFails_AndTheSchemaCannotBeDroppedEither_ThrowsTheRunsOwnFailure()
    {
        await using FlakyApiServer server = await StartServerAsync();
        var readOnly = new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { Options = "-c default_transaction_read_only=on" };
        var demo = new ScaleOutDemo(new ScaleOutOptions { FanOut = new FanOutOptions { Count = 10 }, Instances = 2, Timeout = s_bound },
            readOnly.ConnectionString, server.BaseAddress);

        Exception failure = (await FluentActions.Awaiting(() => demo.RunAsync().WaitAsync(s_bound)).Should().ThrowAsync<Exception>()).Which;

        failure.ToString().Should().Contain("read-only").And.NotContain("DROP SCHEMA", "the run's own failure is thrown, not the clean-up's");
    }

    private static void ShouldBeSeparateProcessesThatShared(ScaleOutResult result)
    {
        result.Instances.Should().HaveCount(Instances);
        result.Instances.Select(i => i.ProcessId).Should().OnlyHaveUniqueItems().And.NotContain(Environment.ProcessId);
        // All three wait for the work before it is put; on a loaded machine one may still come late to it.
        result.Instances.Count(i => i.Recorded > 0).Should().BeGreaterThanOrEqualTo(2, "the processes shared the work");
    }

    private static Task<FlakyApiServer> StartServerAsync() => FlakyApiServer.StartAsync(new FlakyApiOptions
    {
        // Long enough next to a permit's round trip to the database that the global limit is contended.
        Latency = TimeSpan.FromMilliseconds(20),
        Jitter = TimeSpan.FromMilliseconds(5),
        ErrorRate = 0.05,
    });

    private async Task<ScaleOutResult> RunAsync(FlakyApiServer server, bool killOne, Action<ScaleOutProgress>? progress = null)
    {
        var options = new ScaleOutOptions
        {
            FanOut = new FanOutOptions { Count = Count, Limit = LocalLimit, Retries = 3, BatchSize = 20, BatchDelay = TimeSpan.FromMilliseconds(20) },
            Instances = Instances,
            GlobalLimit = GlobalLimit,
            KillOne = killOne,
            ProgressInterval = TimeSpan.FromMilliseconds(50),
            Timeout = s_bound,
        };
        var demo = new ScaleOutDemo(options, postgres.ConnectionString, server.BaseAddress);
        return await demo.RunAsync(progress).WaitAsync(s_bound * 2);
    }

    /// <summary>The PostgreSQL server of these tests: ASYNCTOOLS_POSTGRES, or a throwaway one.</summary>
    public sealed class Postgres : IAsyncLifetime
    {
        private TestPostgres? _server;

        public string ConnectionString => _server?.ConnectionString ?? throw new InvalidOperationException(TestPostgres.SkipReason ?? "The server is not started.");

        public async Task InitializeAsync()
        {
            if (TestPostgres.SkipReason is null)
            {
                _server = await TestPostgres.StartAsync();
            }
        }

        public async Task DisposeAsync()
        {
            if (_server is not null)
            {
                await _server.DisposeAsync();
            }
        }
    }
}
