using AsyncPrimitives.Postgres.Tests.Support;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

public sealed class PostgresLockTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>Long enough that a test passing within it proves a wake-up came from a notification, not a poll.</summary>
    private static readonly TimeSpan s_noPolling = TimeSpan.FromHours(1);

    [PostgresFact]
    public async Task AcquireAsync_WhenFree_GrantsAndExcludesOtherCoordinators()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresLock lockA = a.Coordinator.CreateLock("job");
        PostgresLock lockB = b.Coordinator.CreateLock("job");

        PostgresLease lease = await lockA.AcquireAsync();
        (await lockB.TryAcquireAsync()).Should().BeNull("another coordinator holds the lock");

        await lease.ReleaseAsync();
        PostgresLease? next = await lockB.TryAcquireAsync();
        next.Should().NotBeNull();
        await next!.ReleaseAsync();
        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }

    [PostgresFact]
    public async Task TryAcquireAsync_FromTheHoldingProcess_ReturnsNull()
    {
        Member a = await JoinAsync();
        PostgresLock jobLock = a.Coordinator.CreateLock("job");
        await using PostgresLease lease = await jobLock.AcquireAsync();

        (await jobLock.TryAcquireAsync()).Should().BeNull("the lock is not reentrant");
        (await a.Coordinator.CreateLock("job").TryAcquireAsync()).Should().BeNull();
    }

    [PostgresFact]
    public async Task Locks_WithDifferentNames_AreIndependent()
    {
        Member a = await JoinAsync();
        await using PostgresLease first = await a.Coordinator.CreateLock("one").AcquireAsync();
        await using PostgresLease? second = await a.Coordinator.CreateLock("two").TryAcquireAsync();
        second.Should().NotBeNull();
        await using PostgresLease? semaphore = await a.Coordinator.CreateSemaphore("one", 1).TryAcquireAsync();
        semaphore.Should().NotBeNull("a semaphore and a lock of the same name are different things");
    }

    [PostgresFact]
    public async Task AcquireAsync_WhenHeld_WaitsInFifoOrder_AcrossCoordinators()
    {
        Member a = await JoinAsync(o => o.PollInterval = s_noPolling);
        Member b = await JoinAsync(o => o.PollInterval = s_noPolling);
        Member holder = await JoinAsync();
        PostgresLease held = await holder.Coordinator.CreateLock("job").AcquireAsync();

        var order = new List<string>();
        var waits = new List<Task>();
        foreach ((Member member, string name) in new[] { (a, "a1"), (b, "b1"), (a, "a2"), (b, "b2") })
        {
            PostgresLock jobLock = member.Coordinator.CreateLock("job");
            waits.Add(Task.Run(async () =>
            {
                PostgresLease lease = await jobLock.AcquireAsync();
                lock (order)
                {
                    order.Add(name);
                }

                await lease.ReleaseAsync();
            }));
            await WaitersAsync(waits.Count);
        }

        await held.ReleaseAsync();
        await Task.WhenAll(waits).WaitAsync(Bound);
        order.Should().Equal("a1", "b1", "a2", "b2");
    }

    [PostgresFact]
    public async Task FencingToken_IncreasesWithEveryGrant_AcrossCoordinators()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        var tokens = new List<long>();
        for (int i = 0; i < 6; i++)
        {
            Member member = i % 2 == 0 ? a : b;
            await using PostgresLease lease = await member.Coordinator.CreateLock("job").AcquireAsync();
            tokens.Add(lease.FencingToken);
        }

        tokens.Should().BeInAscendingOrder().And.OnlyHaveUniqueItems();
    }

    [PostgresFact]
    public async Task AcquireAsync_WithTimeout_ThrowsTimeoutException_AndLeavesNothing()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        await using PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync();

        Func<Task> wait = async () => await b.Coordinator.CreateLock("job").AcquireAsync(TimeSpan.FromMilliseconds(200));
        await wait.Should().ThrowAsync<TimeoutException>();
        (await PermitRowsAsync()).Should().Be((1L, 0L), "the timed-out wait left its place in line");
    }

    [PostgresFact]
    public async Task AcquireAsync_WithZeroTimeout_ThrowsAtOnce_WithoutQueueing()
    {
        Member a = await JoinAsync();
        await using PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync();

        Func<Task> now = async () => await a.Coordinator.CreateLock("job").AcquireAsync(TimeSpan.Zero);
        await now.Should().ThrowAsync<TimeoutException>();
        (await PermitRowsAsync()).Should().Be((1L, 0L));

        await held.ReleaseAsync();
        await using PostgresLease free = await a.Coordinator.CreateLock("job").AcquireAsync(TimeSpan.Zero);
        free.FencingToken.Should().BeGreaterThan(held.FencingToken);
    }

    [PostgresFact]
    public async Task AcquireAsync_Cancelled_ThrowsAndLeavesNothing_AndTheNextWaiterIsServed()
    {
        Member a = await JoinAsync(o => o.PollInterval = s_noPolling);
        Member b = await JoinAsync(o => o.PollInterval = s_noPolling);
        PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync();

        using var cancel = new CancellationTokenSource();
        Task<PostgresLease> first = b.Coordinator.CreateLock("job").AcquireAsync(cancel.Token).AsTask();
        await WaitersAsync(1);
        Task<PostgresLease> second = a.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(2);

        cancel.Cancel();
        await FluentActions.Awaiting(() => first.WaitAsync(Bound)).Should().ThrowAsync<OperationCanceledException>();
        await WaitersAsync(1);

        await held.ReleaseAsync();
        await using PostgresLease next = await second.WaitAsync(Bound);
        next.FencingToken.Should().BeGreaterThan(held.FencingToken);
    }

    /// <summary>
    /// A service that calls <c>CreateLock</c> where it uses the lock has many objects of one lock in one process. A
    /// release by one of them hands the permit to a wait on another at once ("a waiter in the same process gets it at
    /// once"): the wait makes no call to claim it on the server.
    /// </summary>
    [PostgresFact]
    public async Task AReleaseByOneObjectOfALock_HandsThePermitToAWaitOnAnotherObjectOfIt_WithoutACallToClaimIt()
    {
        var time = new AsyncTools.Testing.CountingTimeProvider(); // no heartbeat, which also renews the lease's row
        Member a = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.PollInterval = s_noPolling;
        });
        PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync(Bound);
        Task<PostgresLease> waiting = a.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1);

        // A wait's call that claims a permit granted to its ticket updates the permit's row and keeps the ticket.
        await ScalarAsync<int>(
            "CREATE TABLE @schema.claims (ticket bigint); " +
            "CREATE FUNCTION @schema.count_claim() RETURNS trigger LANGUAGE plpgsql AS " +
            "$$ BEGIN INSERT INTO @schema.claims VALUES (NEW.ticket); RETURN NEW; END $$; " +
            "CREATE TRIGGER count_claim AFTER UPDATE ON @schema.permit_slots FOR EACH ROW " +
            "WHEN (OLD.ticket IS NOT NULL AND NEW.ticket = OLD.ticket) EXECUTE FUNCTION @schema.count_claim(); " +
            "SELECT 1");
        await held.ReleaseAsync();

        await using PostgresLease lease = await waiting.WaitAsync(Bound);
        lease.FencingToken.Should().BeGreaterThan(held.FencingToken);
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.claims")).Should().Be(0, "the release handed the permit over in the process");
    }

    [PostgresFact]
    public async Task AcquireAsync_WithCancelledToken_ThrowsAtOnce()
    {
        Member a = await JoinAsync();
        Func<Task> call = async () => await a.Coordinator.CreateLock("job").AcquireAsync(new CancellationToken(canceled: true));
        await call.Should().ThrowAsync<OperationCanceledException>();
        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }

    [PostgresFact]
    public async Task ReleaseAsync_IsIdempotent_AndDoesNotFireLost()
    {
        Member a = await JoinAsync();
        PostgresLease lease = await a.Coordinator.CreateLock("job").AcquireAsync();
        await lease.ReleaseAsync();
        await lease.ReleaseAsync();
        await lease.DisposeAsync();

        lease.Lost.IsCancellationRequested.Should().BeFalse();
        lease.ToString().Should().Contain("released");
        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }

    /// <summary>An explicit release then `await using`'s dispose: the second call's task completes only once the
    /// first release has freed the permit on the server (here held up by a row lock).</summary>
    [PostgresFact]
    public async Task ASecondReleaseWhileTheFirstIsAtTheServer_CompletesOnlyWhenThePermitIsFree()
    {
        Member a = await JoinAsync();
        PostgresLease lease = await a.Coordinator.CreateLock("job").AcquireAsync();
        Task first;
        Task second;
        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        {
            await using NpgsqlTransaction hold = await connection.BeginTransactionAsync();
            await ExecuteAsync(hold, "SELECT 1 FROM @schema.permit_slots FOR UPDATE");
            first = lease.ReleaseAsync().AsTask();
            await WaitsForALockAsync(a, "the first release waits for the held row");
            second = lease.DisposeAsync().AsTask();
            Task third = lease.ReleaseAsync().AsTask();

            second.IsCompleted.Should().BeFalse("the permit is still held on the server");
            third.IsCompleted.Should().BeFalse("the permit is still held on the server");
            await hold.CommitAsync();
            await Task.WhenAll(first, second, third).WaitAsync(Bound);
        }

        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }

    /// <summary>A release that fails (misuse: the data source was disposed before its coordinator, and every connection
    /// the coordinator keeps is busy, so it must open one) throws from every call rather than leaving them waiting.</summary>
    [PostgresFact]
    public async Task AReleaseThatFails_ThrowsFromEveryCall_RatherThanHanging()
    {
        Member a = await JoinAsync();
        var leases = new List<PostgresLease>();
        for (int i = 0; i < 6; i++)
        {
            leases.Add(await a.Coordinator.CreateLock("job" + i).AcquireAsync());
        }

        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction hold = await connection.BeginTransactionAsync();
        await ExecuteAsync(hold, "SELECT 1 FROM @schema.permit_slots FOR UPDATE");
        Task[] held = leases.Take(5).Select(l => l.ReleaseAsync().AsTask()).ToArray(); // every kept connection is busy
        await WaitsForALockAsync(a, "five releases wait for the held rows", 5);
        await a.Source.DisposeAsync();

        await FluentActions.Awaiting(() => leases[5].ReleaseAsync().AsTask().WaitAsync(Bound)).Should().ThrowAsync<ObjectDisposedException>();
        await FluentActions.Awaiting(() => leases[5].DisposeAsync().AsTask().WaitAsync(Bound)).Should().ThrowAsync<ObjectDisposedException>();
        await hold.CommitAsync();
        await Task.WhenAll(held).WaitAsync(Bound);
    }

    [PostgresFact]
    public async Task DisposeAsync_ReleasesTheLease()
    {
        Member a = await JoinAsync();
        await using (await a.Coordinator.CreateLock("job").AcquireAsync())
        {
            (await PermitRowsAsync()).Holders.Should().Be(1);
        }

        (await PermitRowsAsync()).Should().Be((0L, 0L));
    }

    [PostgresFact]
    public async Task Heartbeat_KeepsALeaseHeldLongerThanItsDuration()
    {
        // Renewed every second (a third of the lease); Lost fires 2.7 s (the lease less its margin) after the last renewal
        // that got through, so a renewal may come 1.7 s late on a loaded machine.
        Member a = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(3));
        Member b = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(3));
        await using PostgresLease lease = await a.Coordinator.CreateLock("job").AcquireAsync();

        // Over two lease durations: without renewals the lease would have expired twice.
        Func<Task> wait = async () => await b.Coordinator.CreateLock("job").AcquireAsync(TimeSpan.FromSeconds(6.5));
        await wait.Should().ThrowAsync<TimeoutException>();
        lease.Lost.IsCancellationRequested.Should().BeFalse();
    }

    [PostgresFact]
    public async Task ToString_NamesTheLock()
    {
        Member a = await JoinAsync();
        PostgresLock jobLock = a.Coordinator.CreateLock("job");
        jobLock.ToString().Should().Be("PostgresLock(name=job)");
        jobLock.Name.Should().Be("job");
        await using PostgresLease lease = await jobLock.AcquireAsync();
        lease.ToString().Should().Be($"PostgresLease(name=job, token={lease.FencingToken}, held)");
    }

    /// <summary>permit_slots keeps a row for every permit of every name ever used (a lock per tenant: a row per tenant);
    /// the heartbeat's renewal of what a coordinator holds must not read them all on every beat.</summary>
    [PostgresFact]
    public async Task TheRenewalOfALease_DoesNotReadAPermitOfEveryNameEverUsed()
    {
        Member a = await JoinAsync();
        const int names = 500;
        await Parallel.ForEachAsync(Enumerable.Range(0, names), new ParallelOptions { MaxDegreeOfParallelism = 4 }, async (i, _) =>
        {
            await using PostgresLease used = await a.Coordinator.CreateLock("tenant-" + i).AcquireAsync();
        });
        await using PostgresLease lease = await a.Coordinator.CreateLock("job").AcquireAsync();

        // The heartbeat's statement for this coordinator's one lease (see Session.RenewAsync), in a transaction of the
        // test's own, whose reads of the table are counted.
        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync();
        await using (var renew = new NpgsqlCommand(
            $"SELECT count(*) FROM \"{Schema}\".renew($1, $2, $3::\"char\"[], $4, $5, $6, $7, $8, $9)", connection, transaction))
        {
            renew.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = a.Coordinator.Owner });
            renew.Parameters.Add(new NpgsqlParameter<long> { TypedValue = a.Coordinator.CurrentSession!.Key });
            renew.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = ["l"] });
            renew.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = ["job"] });
            renew.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = [lease.FencingToken] });
            renew.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = [] });
            renew.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = TimeSpan.FromSeconds(30) });
            renew.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = [] });
            renew.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = [] });
            ((long)(await renew.ExecuteScalarAsync())!).Should().Be(1, "the one lease is renewed");
        }

        await using (var read = new NpgsqlCommand(
            $"SELECT pg_stat_get_xact_tuples_returned('\"{Schema}\".permit_slots'::regclass)", connection, transaction))
        {
            ((long)(await read.ExecuteScalarAsync())!).Should().BeLessThan(10, "renewing one lease reads its own row, not one of each of {0} names", names);
        }

        await transaction.RollbackAsync();
    }
}
