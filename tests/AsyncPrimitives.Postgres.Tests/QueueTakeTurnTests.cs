using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// The queue's take turn (revision 7): every take holds it shared, a shutdown takes it exclusively after the put turn.
/// What the turns promise about waits must hold for every queue name.
/// </summary>
public sealed class QueueTakeTurnTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// "A shutdown that waits for an open transaction of yours that put an item in its queue holds up that queue's puts
    /// only: other queues, gets, completions and the heartbeat go on" (docs/scale-out.md, the guarantees' table). An open
    /// transaction of the application put an item in the queue "takes jobs", whose shutdown waits for it. A get of another
    /// queue, "jobs", must go on: a TryGetAsync never waits, and takes the item that waits there.
    /// </summary>
    [PostgresFact]
    public async Task AShutdownWaitingForAnOpenPut_DoesNotHoldUpTheGetsOfAnotherQueue_WhateverItsName()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> jobs = a.Coordinator.CreateQueue<int>("jobs");
        PostgresQueue<int> other = a.Coordinator.CreateQueue<int>("takes jobs");
        await jobs.PutAsync(1);

        await using NpgsqlConnection connection = await a.Source.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await other.PutAsync(2, transaction);
        Task shutdown = other.ShutdownAsync().AsTask();
        await WaitsForALockAsync(a, "the shutdown of 'takes jobs' waits for the open transaction that put an item in it");

        Task<PostgresDelivery<int>?> get = jobs.TryGetAsync().AsTask();
        // It answers, or it waits at the server too (a second backend of the coordinator waiting for a lock).
        await Task.WhenAny(get, WaitsForALockAsync(a, "the get of 'jobs' waits at the server", count: 2)).WaitAsync(Bound);
        get.IsCompleted.Should().BeTrue("the shutdown of another queue holds up that queue's puts only: gets of 'jobs' go on");
        PostgresDelivery<int>? delivery = await get;
        delivery.Should().NotBeNull("an item waits in 'jobs'");
        delivery!.Item.Should().Be(1);
        await delivery.CompleteAsync();

        shutdown.IsCompleted.Should().BeFalse("the shutdown of 'takes jobs' waits for the open transaction");
        await transaction.CommitAsync();
        await shutdown.WaitAsync(Bound);
    }

    /// <summary>
    /// "a shutdown takes that turn exclusively first, so a put in flight either commits before the shutdown or fails. Then
    /// it takes the queue's take turn exclusively ... A shutdown that waits for an open transaction of yours that put an
    /// item in its queue holds up that queue's puts only" (docs/scale-out.md); "the package uses PostgreSQL's advisory
    /// locks ... puts (shared) and a shutdown (exclusive) of one queue, and, on another, that queue's takes (shared) and
    /// the shutdown again (exclusive)" (docs/scale-out.md, schema). The shutdown of "jobs" waits for puts of "jobs" and
    /// takes of "jobs" only: an open transaction that put an item in another queue, "takes jobs", must not hold it up.
    /// </summary>
    [PostgresFact]
    public async Task AShutdown_DoesNotWaitForAnOpenTransactionThatPutInAnotherQueue_WhateverItsName()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> jobs = a.Coordinator.CreateQueue<int>("jobs");
        PostgresQueue<int> other = a.Coordinator.CreateQueue<int>("takes jobs");

        await using NpgsqlConnection connection = await a.Source.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted);
        await other.PutAsync(2, transaction);

        Task shutdown = jobs.ShutdownAsync().AsTask();
        // It commits, or it waits at the server.
        await Task.WhenAny(shutdown, WaitsForALockAsync(a, "the shutdown of 'jobs' waits at the server")).WaitAsync(Bound);
        shutdown.IsCompleted.Should().BeTrue("no put of 'jobs' and no take of 'jobs' is in flight");
        await shutdown;
        await FluentActions.Awaiting(async () => await jobs.TryGetAsync()).Should().ThrowAsync<QueueShutDownException>();

        await transaction.CommitAsync();
        (await other.CountAsync()).Should().Be(1, "the other queue's put committed");
    }

    /// <summary>
    /// "Shuts the queue down for every process: later puts throw QueueShutDownException, and so do gets once nothing is
    /// left to deliver" (PostgresQueue.ShutdownAsync); "The items waiting to be delivered ... deliveries that expired ...
    /// included when they have an attempt left, as they will be delivered again" (PostgresQueue.CountAsync). A get waits at
    /// the server for the queue's take turn, behind a shutdown that waits for a take in flight (played by the test, which
    /// holds the turn). Meanwhile a delivery's lease expires (played by the test: it ends at the server's present moment,
    /// after the get's statement started), before the shutdown commits: from then on the item is left to deliver, as
    /// CountAsync says. When the get runs, after the shutdown, it must take that item (or wait), not end saying that
    /// nothing is left to deliver, leaving the item waiting in line with no getter.
    /// </summary>
    [PostgresFact]
    public async Task AGet_HeldAtTheTakeTurnByAShutdown_DoesNotEnd_WhileADeliveryExpiredBeforeTheShutdown()
    {
        var holderTime = new CountingTimeProvider(); // no heartbeat: the server alone decides
        Member a = await JoinAsync(o => { o.TimeProvider = holderTime; o.LeaseDuration = TimeSpan.FromMinutes(1); });
        var time = new CountingTimeProvider(); // the getter's polls never come
        Member b = await JoinAsync(o => { o.TimeProvider = time; o.PollInterval = TimeSpan.FromHours(1); });
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("jobs");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("jobs");
        await queueA.PutAsync(1);
        PostgresDelivery<int> held = await queueA.GetAsync(Bound);
        (await queueB.TryGetAsync()).Should().BeNull("the item is delivered"); // b's session is open

        Task shutdown;
        Task<PostgresDelivery<int>> get;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction take = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(take, "SELECT @schema.queue_turn('jobs', true, false)"); // a take in flight
            shutdown = queueA.ShutdownAsync().AsTask();
            await WaitsForALockAsync(a, "the shutdown waits for the take in flight");
            get = queueB.GetAsync().AsTask();
            await WaitsForALockAsync(b, "the get waits for the take turn, behind the shutdown");

            // Time passes at the server: the lease ends now, after the get's statement started, before the shutdown.
            await ExpireLeasesNowAsync();
            (await queueA.CountAsync()).Should().Be(1, "the expired delivery will be delivered again");
            shutdown.IsCompleted.Should().BeFalse();
            await take.CommitAsync();
        }

        await shutdown.WaitAsync(Bound);
        PostgresDelivery<int> delivery = await get.WaitAsync(Bound); // QueueShutDownException: nothing left, it says
        delivery.Item.Should().Be(1);
        delivery.Attempt.Should().Be(2);
        await delivery.CompleteAsync();
        GC.KeepAlive(held);
    }
}
