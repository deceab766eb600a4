using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// The "AsyncPrimitives.Postgres" meter (DESIGN.md, Metrics): a wait that had to sleep for its turn is recorded in
/// <c>asynctools.wait.duration</c> with its outcome and counted in <c>asynctools.waiters</c> while it waits (from its
/// place in a line on the server, or its first sleep); a call
/// served at once records nothing. Each test uses names of its own, and looks (and waits) only for measurements tagged
/// with them: the collectors hear every coordinator in the process.
/// </summary>
public sealed class WaitMeteringTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task LockWait_ThatHadToSleep_IsCountedWhileItSleeps_AndRecordedAsAcquired()
    {
        string name = "metered-" + Guid.NewGuid().ToString("N")[..12];
        using var durations = new MetricCollector<double>(null, "AsyncPrimitives.Postgres", "asynctools.wait.duration");
        using var waiters = new MetricCollector<long>(null, "AsyncPrimitives.Postgres", "asynctools.waiters");
        Member holder = await JoinAsync();
        Member waiter = await JoinAsync();
        PostgresLease held = await holder.Coordinator.CreateLock(name).AcquireAsync();
        Tagged(durations.GetMeasurementSnapshot(), name).Should().BeEmpty("a lock acquired at once is no wait");

        Task<PostgresLease> waiting = waiter.Coordinator.CreateLock(name).AcquireAsync().AsTask();
        await SleepingAsync(waiters, name);

        await held.ReleaseAsync();
        await (await waiting.WaitAsync(Bound)).ReleaseAsync();

        CollectedMeasurement<double> wait = Tagged(durations.GetMeasurementSnapshot(), name).Should().ContainSingle().Subject;
        wait.Value.Should().BeGreaterThan(0);
        wait.Tags.Should().BeEquivalentTo(new Dictionary<string, object?>
        {
            ["asynctools.kind"] = "PostgresLock",
            ["asynctools.name"] = name,
            ["asynctools.outcome"] = "acquired",
        });
        Tagged(waiters.GetMeasurementSnapshot(), name).Select(m => m.Value).Should().Equal(1, -1);
    }

    [PostgresFact]
    public async Task AListenerThatThrowsAsALockWaitQueues_FailsThatWait_WhichLeavesItsPlaceOnTheServer()
    {
        string name = "metered-" + Guid.NewGuid().ToString("N")[..12];
        Member holder = await JoinAsync();
        Member waiter = await JoinAsync();
        PostgresLease held = await holder.Coordinator.CreateLock(name).AcquireAsync(Bound);
        using (WaitMeasurementListener.Throwing("AsyncPrimitives.Postgres", name, WaitMeasurementListener.IsQueueing))
        {
            await FluentActions.Awaiting(async () => await waiter.Coordinator.CreateLock(name).AcquireAsync(Bound))
                .Should().ThrowAsync<InvalidOperationException>("nothing is swallowed");
        }

        await held.ReleaseAsync();
        await using PostgresLease? next = await holder.Coordinator.CreateLock(name).TryAcquireAsync();
        next.Should().NotBeNull("the failed wait left the line: no one waits, and the release handed the lock to no one");
    }

    [PostgresFact]
    public async Task ZeroTimeoutCalls_ThatFindTheyMustWait_NeverQueue_AndRecordNothing_AcquireGetAndJoin()
    {
        string name = "metered-" + Guid.NewGuid().ToString("N")[..12];
        using var durations = new MetricCollector<double>(null, "AsyncPrimitives.Postgres", "asynctools.wait.duration");
        using var waiters = new MetricCollector<long>(null, "AsyncPrimitives.Postgres", "asynctools.waiters");
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        await using PostgresLease held = await a.Coordinator.CreateLock(name).AcquireAsync(Bound);
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>(name);
        await queue.PutAsync(1); // unfinished: a join must wait

        await FluentActions.Awaiting(async () => await b.Coordinator.CreateLock(name).AcquireAsync(TimeSpan.Zero)).Should().ThrowAsync<TimeoutException>();
        await FluentActions.Awaiting(async () => await b.Coordinator.CreateQueue<int>(name + "-empty").GetAsync(TimeSpan.Zero)).Should().ThrowAsync<TimeoutException>();
        await FluentActions.Awaiting(async () => await queue.JoinAsync(TimeSpan.Zero)).Should().ThrowAsync<TimeoutException>();

        durations.GetMeasurementSnapshot().Where(m => m.Tags["asynctools.name"] is string n && n.StartsWith(name, StringComparison.Ordinal))
            .Should().BeEmpty("a call with TimeSpan.Zero looks once and never queues");
        Tagged(waiters.GetMeasurementSnapshot(), name).Should().BeEmpty();
    }

    [PostgresFact]
    public async Task SemaphoreWait_ThatTimesOut_IsRecordedAsTimeout()
    {
        string name = "metered-" + Guid.NewGuid().ToString("N")[..12];
        using var durations = new MetricCollector<double>(null, "AsyncPrimitives.Postgres", "asynctools.wait.duration");
        Member a = await JoinAsync();
        PostgresSemaphore semaphore = a.Coordinator.CreateSemaphore(name, 1);
        await using PostgresLease held = await semaphore.AcquireAsync();

        Func<Task> wait = () => semaphore.AcquireAsync(TimeSpan.FromMilliseconds(200)).AsTask();

        await wait.Should().ThrowAsync<TimeoutException>();
        CollectedMeasurement<double> timedOut = Tagged(durations.GetMeasurementSnapshot(), name).Should().ContainSingle().Subject;
        timedOut.Tags["asynctools.kind"].Should().Be("PostgresSemaphore");
        timedOut.Tags["asynctools.outcome"].Should().Be("timeout");
    }

    [PostgresFact]
    public async Task QueueGet_ThatWaitedForAPut_IsRecordedAsAcquired_AndOneCancelledAsCanceled()
    {
        string name = "metered-" + Guid.NewGuid().ToString("N")[..12];
        using var durations = new MetricCollector<double>(null, "AsyncPrimitives.Postgres", "asynctools.wait.duration");
        using var waiters = new MetricCollector<long>(null, "AsyncPrimitives.Postgres", "asynctools.waiters");
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>(name);
        Task<PostgresDelivery<int>> getter = queue.GetAsync().AsTask();
        await SleepingAsync(waiters, name);

        await queue.PutAsync(42);
        await using (PostgresDelivery<int> delivery = await getter.WaitAsync(Bound))
        {
            await delivery.CompleteAsync();
        }

        using var cts = new CancellationTokenSource();
        Task<PostgresDelivery<int>> cancelled = queue.GetAsync(cts.Token).AsTask();
        await SleepingAsync(waiters, name);
        cts.Cancel();
        await cancelled.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();

        Tagged(durations.GetMeasurementSnapshot(), name).Select(m => (m.Tags["asynctools.kind"], m.Tags["asynctools.outcome"]))
            .Should().Equal(("PostgresQueue", "acquired"), ("PostgresQueue", "canceled"));
        Tagged(waiters.GetMeasurementSnapshot(), name).Sum(m => m.Value).Should().Be(0);
    }

    [PostgresFact]
    public async Task LockWait_EndedByItsSessionDying_IsRecordedAsError()
    {
        string name = "metered-" + Guid.NewGuid().ToString("N")[..12];
        using var durations = new MetricCollector<double>(null, "AsyncPrimitives.Postgres", "asynctools.wait.duration");
        using var waiters = new MetricCollector<long>(null, "AsyncPrimitives.Postgres", "asynctools.waiters");
        Member holder = await JoinAsync();
        Member waiter = await JoinAsync();
        await using PostgresLease held = await holder.Coordinator.CreateLock(name).AcquireAsync();
        Task<PostgresLease> dying = waiter.Coordinator.CreateLock(name).AcquireAsync().AsTask();
        await SleepingAsync(waiters, name);

        await TerminateAsync(waiter);

        await dying.Invoking(t => t.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        Tagged(durations.GetMeasurementSnapshot(), name).Select(m => m.Tags["asynctools.outcome"]).Should().Equal("error");
        Tagged(waiters.GetMeasurementSnapshot(), name).Select(m => m.Value).Should().Equal(1, -1);
    }

    [PostgresFact]
    public async Task QueueJoin_ThatWaitedForACompletion_IsRecordedAsAcquired()
    {
        string name = "metered-" + Guid.NewGuid().ToString("N")[..12];
        using var durations = new MetricCollector<double>(null, "AsyncPrimitives.Postgres", "asynctools.wait.duration");
        using var waiters = new MetricCollector<long>(null, "AsyncPrimitives.Postgres", "asynctools.waiters");
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>(name);
        await queue.PutAsync(1);
        await using PostgresDelivery<int> delivery = await queue.GetAsync();
        Task joining = queue.JoinAsync().AsTask();
        await SleepingAsync(waiters, name);

        await delivery.CompleteAsync();

        await joining.WaitAsync(Bound);
        CollectedMeasurement<double> join = Tagged(durations.GetMeasurementSnapshot(), name).Should().ContainSingle().Subject;
        join.Tags["asynctools.kind"].Should().Be("PostgresQueue");
        join.Tags["asynctools.outcome"].Should().Be("acquired");
        Tagged(waiters.GetMeasurementSnapshot(), name).Sum(m => m.Value).Should().Be(0);
    }

    /// <summary>Until the wait on <paramref name="name"/> sleeps for its turn (it is counted among the waiters).</summary>
    [PostgresFact]
    public async Task AWaitThatQueued_AndTimedOutBeforeItsFirstSleep_IsRecordedAsATimeout()
    {
        // The acquire's first call is held at the set's turn while the coordinator's clock passes its timeout: it joins
        // the line, then finds its time up before it sleeps.
        string name = "metered-" + Guid.NewGuid().ToString("N")[..12];
        using var durations = new MetricCollector<double>(null, "AsyncPrimitives.Postgres", "asynctools.wait.duration");
        var time = new CountingTimeProvider();
        Member member = await JoinAsync(o => o.TimeProvider = time);
        PostgresLock theLock = member.Coordinator.CreateLock(name);
        await using PostgresLease held = await theLock.AcquireAsync(Bound);

        Task<PostgresLease> acquiring = await CallHeldAtTheServerAsync(
            $"SELECT @schema.permit_turn('l', '{name}')", member,
            () => theLock.AcquireAsync(TimeSpan.FromSeconds(1)).AsTask(),
            () => time.Advance(TimeSpan.FromSeconds(2)));

        await FluentActions.Awaiting(() => acquiring.WaitAsync(Bound)).Should().ThrowAsync<TimeoutException>();
        Tagged(durations.GetMeasurementSnapshot(), name).Select(m => m.Tags["asynctools.outcome"])
            .Should().Equal(["timeout"], "the wait queued (it took a place in line) and timed out");
        (await PermitRowsAsync()).Should().Be((1L, 0L), "the timed-out wait left the line");
    }

    private static Task SleepingAsync(MetricCollector<long> waiters, string name) => PostgresScope.EventuallyAsync(
        () => Task.FromResult(Tagged(waiters.GetMeasurementSnapshot(), name).Sum(m => m.Value) == 1), $"the wait on '{name}' sleeps");

    private static List<CollectedMeasurement<T>> Tagged<T>(IEnumerable<CollectedMeasurement<T>> measurements, string name)
        where T : struct =>
        measurements.Where(m => Equals(m.Tags.GetValueOrDefault("asynctools.name"), name)).ToList();

    [PostgresFact]
    public async Task AnAcquireThatJoinedTheLine_AndWasHandedThePermitBeforeItsFirstSleep_IsRecorded()
    {
        string name = "handed-" + Guid.NewGuid().ToString("N")[..12];
        using var durations = new MetricCollector<double>(null, "AsyncPrimitives.Postgres", "asynctools.wait.duration");
        using var waiters = new MetricCollector<long>(null, "AsyncPrimitives.Postgres", "asynctools.waiters");
        await using TcpProxy proxy = new("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member member = await JoinAsync(
            o => o.TimeProvider = new CountingTimeProvider(), // no heartbeat meanwhile
            port: proxy.Port,
            connection: b => b.CancellationTimeout = -1);
        PostgresLock theLock = member.Coordinator.CreateLock(name);
        PostgresLease held = await theLock.AcquireAsync(Bound);

        Task<PostgresLease> acquiring;
        int port;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction holding = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(holding, $"SELECT @schema.permit_turn('l', '{name}')");
            acquiring = theLock.AcquireAsync(Bound).AsTask();
            await WaitsForALockAsync(member, "the acquire's call waits for the set's turn");
            port = await ScalarAsync<int>(
                $"SELECT client_port FROM pg_stat_activity WHERE application_name = '{member.Application}' AND wait_event_type = 'Lock'");
            proxy.HoldReplies(port); // the call runs (it joins the line), its answer is held
            await holding.CommitAsync();
        }

        await EventuallyAsync(async () => (await PermitRowsAsync()).Waiters == 1, "the acquire joined the line on the server");
        await held.ReleaseAsync(); // grants the permit to the waiting ticket; handed over in this process
        proxy.ReleaseReplies(port);
        await (await acquiring.WaitAsync(Bound)).ReleaseAsync();

        durations.GetMeasurementSnapshot().Where(m => Equals(m.Tags.GetValueOrDefault("asynctools.name"), name))
            .Select(m => m.Tags["asynctools.outcome"])
            .Should().Equal(["acquired"], "the acquire queued on the server behind the holder, and got the lock");
        waiters.GetMeasurementSnapshot().Where(m => Equals(m.Tags.GetValueOrDefault("asynctools.name"), name)).Sum(m => m.Value)
            .Should().Be(0);
    }
}
