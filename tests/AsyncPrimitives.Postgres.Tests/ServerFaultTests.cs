using System.Diagnostics;
using AsyncPrimitives.Postgres.Internal;
using AsyncPrimitives.Postgres.Tests.Support;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Faults while work is in progress: the server restarted, backends terminated, a session that ends here while the
/// server still takes it for a live one. Every failure is typed, nothing put is lost or completed twice, and nothing
/// is left held by no one.
/// </summary>
public sealed class ServerFaultTests(PostgresServer server) : PostgresTest(server)
{
    /// <summary>
    /// A first acquire call is in flight (held at the server by the set's turn) when the LISTEN connection stops
    /// answering and the session ends here (its backend, and the session lock, live on). The call then queues a place
    /// under that session, and fails: the place must not stay in line to take the next permit released.
    /// </summary>
    [PostgresFact]
    public async Task AFirstAcquireInFlightWhenTheSessionEnds_LeavesNoPlaceToTakeTheNextPermit()
    {
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member cut = await JoinAsync(o => o.LeaseDuration = TimeSpan.FromSeconds(3), port: proxy.Port);
        Member holder = await JoinAsync();
        Member other = await JoinAsync();
        PostgresLease held = await holder.Coordinator.CreateSemaphore("ghost", 1).AcquireAsync(Bound);
        Session session = await cut.Coordinator.GetSessionAsync(CancellationToken.None);
        int listenPort = await ScalarAsync<int>($"SELECT client_port FROM pg_stat_activity WHERE pid = {session.Pid}");

        await using NpgsqlConnection connection = await Admin.OpenConnectionAsync();
        await using NpgsqlTransaction turn = await connection.BeginTransactionAsync();
        await ExecuteAsync(turn, "SELECT pg_advisory_xact_lock(hashtextextended('AsyncPrimitives.Postgres @schema s ghost', 0))");
        Task<PostgresLease> acquiring = cut.Coordinator.CreateSemaphore("ghost", 1).AcquireAsync().AsTask();
        await WaitsForALockAsync(cut, "the first acquire call waits for the set's turn");

        proxy.HoldReplies(listenPort); // the next ping gets no answer: the session ends here, not on the server
        await EventuallyAsync(() => Task.FromResult(session.Ended.IsCancellationRequested), "the session ended here (after end_session)");
        await turn.CommitAsync();

        await FluentActions.Awaiting(() => acquiring.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        long places = await ScalarAsync<long>($"SELECT count(*) FROM @schema.permit_waiters WHERE owner = '{cut.Coordinator.Owner}'");

        await held.ReleaseAsync();
        PostgresSemaphore semaphore = other.Coordinator.CreateSemaphore("ghost", 1);
        long ghost = await ScalarAsync<long>(
            $"SELECT count(*) FROM @schema.permit_slots WHERE token IS NOT NULL AND owner = '{cut.Coordinator.Owner}'");
        int free = await semaphore.GetCurrentCountAsync();
        await using PostgresLease? taken = await semaphore.TryAcquireAsync();
        proxy.ReleaseReplies(listenPort);
        (places, ghost, free, taken is not null).Should().Be(
            (0L, 0L, 1, true),
            "(places of the failed wait, permits granted to it, free count, TryAcquire got one): the failed wait left its " +
            "place in line, so the released permit is free and no one waits for it");
    }

    /// <summary>
    /// Producers and consumers (each consumer under a semaphore permit) on two coordinators while the server restarts:
    /// every call that fails fails with a typed exception, every item whose put returned is completed, nothing is left
    /// unfinished or dead, and every permit is back.
    /// </summary>
    [PostgresRestartFact]
    public async Task ServerRestart_UnderProducersAndConsumers_TypedFailuresOnly_NothingLost_NoPermitLeaked()
    {
        TimeSpan lease = TimeSpan.FromSeconds(3);
        Member[] members = [await JoinAsync(o => o.LeaseDuration = lease), await JoinAsync(o => o.LeaseDuration = lease)];
        var options = new PostgresQueueOptions { MaxAttempts = 1000 };
        var put = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
        var completed = new System.Collections.Concurrent.ConcurrentDictionary<int, int>();
        var uncertain = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
        var failures = new Failures(cancellationIsTyped: false);
        var halfway = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var restarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource();
        int next = 0;
        const int PerProducer = 30;

        Task[] producers = members.Select(m => Task.Run(async () =>
        {
            PostgresQueue<int> queue = m.Coordinator.CreateQueue<int>("work", options);
            for (int i = 0; i < PerProducer; i++)
            {
                if (i == PerProducer / 2)
                {
                    halfway.TrySetResult();
                    await restarted.Task; // half the items before the restart, half after
                }

                await PutRecordingAsync(queue, Interlocked.Increment(ref next), put, failures.Record);
            }
        })).ToArray();

        Task[] consumers = members.SelectMany(m => Enumerable.Range(0, 2).Select(_ => Task.Run(async () =>
        {
            PostgresQueue<int> queue = m.Coordinator.CreateQueue<int>("work", options);
            PostgresSemaphore limit = m.Coordinator.CreateSemaphore("limit", 2);
            while (!stop.IsCancellationRequested)
            {
                PostgresLease? permit = null;
                PostgresDelivery<int>? delivery = null;
                try
                {
                    permit = await limit.AcquireAsync(TimeSpan.FromSeconds(1));
                    delivery = await queue.GetAsync(TimeSpan.FromSeconds(1));
                    try
                    {
                        await delivery.CompleteAsync();
                        completed.AddOrUpdate(delivery.Item, 1, (_, n) => n + 1);
                    }
                    catch (PostgresCoordinationException)
                    {
                        uncertain[delivery.Item] = true;
                        throw;
                    }
                }
#pragma warning disable CA1031
                catch (Exception e)
#pragma warning restore CA1031
                {
                    failures.Record(e);
                }
                finally
                {
                    if (delivery is not null)
                    {
                        await delivery.DisposeAsync();
                    }

                    if (permit is not null)
                    {
                        await permit.ReleaseAsync();
                    }
                }
            }
        }))).ToArray();

        await halfway.Task.WaitAsync(Bound);
        Server.Restart();
        restarted.SetResult();
        await Task.WhenAll(producers).WaitAsync(Bound);

        PostgresQueue<int> probe = members[0].Coordinator.CreateQueue<int>("work", options);
        await UntilNothingUnfinishedAsync(probe);
        await stop.CancelAsync();
        await Task.WhenAll(consumers).WaitAsync(Bound);

        PostgresSemaphore semaphore = members[1].Coordinator.CreateSemaphore("limit", 2);
        int free = await semaphore.GetCurrentCountAsync();
        long dead = await probe.DeadLetterCountAsync();
        string[] missing = [.. put.Where(p => p.Value && !completed.ContainsKey(p.Key) && !uncertain.ContainsKey(p.Key)).Select(p => p.Key.ToString(System.Globalization.CultureInfo.InvariantCulture))];
        string[] twice = [.. completed.Where(c => c.Value > 1).Select(c => c.Key.ToString(System.Globalization.CultureInfo.InvariantCulture))];
        string because = $"{put.Count} puts, {completed.Count} completed, {failures.Typed.Count} typed failures ({string.Join(", ", failures.Typed.Distinct())})";
        failures.Unexpected.Should().BeEmpty(because + ": a failure is a typed exception");
        missing.Should().BeEmpty(because + ": every item whose put returned is completed");
        twice.Should().BeEmpty(because + ": no item is completed twice");
        (dead, free).Should().Be((0L, 2), because + ": nothing dead, every permit back");
    }

    /// <summary>
    /// ReadAllAsync loops, JoinAsync and producers on two coordinators while every backend of one or the other is
    /// terminated, again and again: every failure is typed, every item whose put returned is completed (a loop's item
    /// completed by the loop's next step counts once the step returned), Unfinished returns to 0 and JoinAsync returns.
    /// </summary>
    [PostgresFact]
    public async Task TerminatedBackends_UnderReadLoopsAndJoins_TypedFailuresOnly_NothingLost()
    {
        TimeSpan lease = TimeSpan.FromSeconds(2);
        Member[] members = [await JoinAsync(o => o.LeaseDuration = lease), await JoinAsync(o => o.LeaseDuration = lease)];
        var options = new PostgresQueueOptions { MaxAttempts = 1000 };
        var put = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
        var seen = new System.Collections.Concurrent.ConcurrentDictionary<int, int>();
        var failures = new Failures(cancellationIsTyped: true);
        using var stop = new CancellationTokenSource();
        int next = 0;
        const int PerProducer = 60;

        Task[] producers = members.Select(m => Task.Run(async () =>
        {
            PostgresQueue<int> queue = m.Coordinator.CreateQueue<int>("loop", options);
            for (int i = 0; i < PerProducer; i++)
            {
                await PutRecordingAsync(queue, Interlocked.Increment(ref next), put, failures.Record);

                if (i % 10 == 9)
                {
                    try
                    {
                        await queue.JoinAsync(TimeSpan.FromSeconds(1));
                    }
#pragma warning disable CA1031
                    catch (Exception e)
#pragma warning restore CA1031
                    {
                        failures.Record(e);
                    }
                }
            }
        })).ToArray();

        Task[] consumers = members.SelectMany(m => Enumerable.Range(0, 2).Select(_ => Task.Run(async () =>
        {
            PostgresQueue<int> queue = m.Coordinator.CreateQueue<int>("loop", options);
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await foreach (PostgresDelivery<int> delivery in queue.ReadAllAsync(stop.Token))
                    {
                        seen.AddOrUpdate(delivery.Item, 1, (_, n) => n + 1);
                    }
                }
#pragma warning disable CA1031
                catch (Exception e)
#pragma warning restore CA1031
                {
                    failures.Record(e);
                }
            }
        }))).ToArray();

        var rng = new Random(Environment.TickCount & 0x7fff);
        Task producing = Task.WhenAll(producers);
        int faults = 0;
        while (!producing.IsCompleted && faults < 8)
        {
            // The moment of a fault is what is random: after a random number of further puts.
            int target = put.Count + rng.Next(3, 15);
            await EventuallyAsync(() => Task.FromResult(producing.IsCompleted || put.Count >= target), "the producers go on");
            await TerminateAsync(members[rng.Next(2)]);
            faults++;
        }

        await producing.WaitAsync(Bound);
        PostgresQueue<int> probe = members[0].Coordinator.CreateQueue<int>("loop", options);
        await UntilNothingUnfinishedAsync(probe);
        await probe.JoinAsync(TimeSpan.FromSeconds(5));
        await stop.CancelAsync();
        await Task.WhenAll(consumers).WaitAsync(Bound);

        long dead = await probe.DeadLetterCountAsync();
        string[] missing = [.. put.Where(p => p.Value && !seen.ContainsKey(p.Key)).Select(p => p.Key.ToString(System.Globalization.CultureInfo.InvariantCulture))];
        string because = $"{faults} faults, {put.Count} puts, {seen.Count} items seen, {failures.Typed.Count} typed failures ({string.Join(", ", failures.Typed.Distinct())})";
        failures.Unexpected.Should().BeEmpty(because + ": a failure is a typed exception");
        missing.Should().BeEmpty(because + ": every item whose put returned is delivered");
        dead.Should().Be(0, because);
    }

    /// <summary>Only the LISTEN backend of the holder is terminated (its pooled connections live on); the waiters, one
    /// in the holder's own process and one in a process that never polls, are told: the local one fails typed, the other
    /// gets the lock at once, and nothing is left.</summary>
    [PostgresFact]
    public async Task OnlyTheHoldersListenBackendTerminated_TheOtherProcessGetsTheLockWithoutPolling_NothingLeft()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync(Bound);
        Task<PostgresLease> sameProcess = a.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(1);
        Task<PostgresLease> otherProcess = b.Coordinator.CreateLock("job").AcquireAsync().AsTask();
        await WaitersAsync(2);
        Session session = await a.Coordinator.GetSessionAsync(CancellationToken.None);

        (await ScalarAsync<bool>($"SELECT pg_terminate_backend({session.Pid})")).Should().BeTrue();

        await WaitForLostAsync(held.Lost);
        await FluentActions.Awaiting(() => sameProcess.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        PostgresLease next = await otherProcess.WaitAsync(Bound);
        next.FencingToken.Should().BeGreaterThan(held.FencingToken);
        await held.ReleaseAsync();
        await next.ReleaseAsync();
        (await PermitRowsAsync()).Should().Be((0L, 0L));
        await using PostgresLease again = await a.Coordinator.CreateLock("job").AcquireAsync(Bound);
        again.FencingToken.Should().BeGreaterThan(next.FencingToken);
    }

    /// <summary>A batch completion and a put, each held at the server, have their backend terminated: both are tried
    /// again on a new connection (the statement never ran), so every item is completed once and the put is there once.</summary>
    [PostgresFact]
    public async Task ABatchCompletionAndAPut_WhoseBackendsAreTerminatedWhileHeld_AreTriedAgain_ExactlyOnce()
    {
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("held");
        await queue.PutManyAsync([1, 2, 3]);
        IReadOnlyList<PostgresDelivery<int>> got = await queue.GetManyAsync(3, Bound);
        got.Should().HaveCount(3);

        await using (NpgsqlConnection connection = await Admin.OpenConnectionAsync())
        await using (NpgsqlTransaction hold = await connection.BeginTransactionAsync(System.Data.IsolationLevel.ReadCommitted))
        {
            await ExecuteAsync(hold, $"SELECT 1 FROM @schema.queue_items WHERE id = {got[1].Id} FOR UPDATE");
            await ExecuteAsync(hold, "SELECT pg_advisory_xact_lock(hashtextextended('AsyncPrimitives.Postgres @schema queue held', 0))");
            Task completing = queue.CompleteManyAsync(got).AsTask();
            Task putting = queue.PutAsync(4).AsTask();
            await WaitsForALockAsync(a, "the completion and the put wait", count: 2);
            long killed = await ScalarAsync<long>(
                $"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{a.Application}' AND wait_event_type = 'Lock'");
            killed.Should().Be(2);
            await WaitsForALockAsync(a, "both are tried again", count: 2);
            await hold.CommitAsync();
            await completing.WaitAsync(Bound);
            await putting.WaitAsync(Bound);
        }

        (await queue.UnfinishedAsync()).Should().Be(1);
        await using PostgresDelivery<int> last = await queue.GetAsync(Bound);
        last.Item.Should().Be(4);
        await last.CompleteAsync();
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    /// <summary>A restart while a join waits, a read loop's body holds an item and a lock is held: each is told
    /// (typed), the item comes back, and the join and the lock work afterwards.</summary>
    [PostgresRestartFact]
    public async Task ServerRestart_FailsAJoinAndAReadLoopTyped_TheItemComesBack_LaterCallsWork()
    {
        Member a = await JoinAsync();
        Member b = await JoinAsync();
        PostgresQueue<int> queueA = a.Coordinator.CreateQueue<int>("loop");
        PostgresQueue<int> queueB = b.Coordinator.CreateQueue<int>("loop");
        await queueA.PutManyAsync([1, 2]);
        PostgresLease held = await a.Coordinator.CreateLock("job").AcquireAsync(Bound);
        var inBody = new TaskCompletionSource<PostgresDelivery<int>>(TaskCreationOptions.RunContinuationsAsynchronously);
        var goOn = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task loop = Task.Run(async () =>
        {
            await foreach (PostgresDelivery<int> delivery in queueA.ReadAllAsync())
            {
                inBody.TrySetResult(delivery);
                await goOn.Task;
            }
        });
        PostgresDelivery<int> first = await inBody.Task.WaitAsync(Bound);
        Task joining = queueB.JoinAsync().AsTask();
        await EventuallyAsync(async () => await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_joins") == 1, "the join waits");

        Server.Restart();

        await FluentActions.Awaiting(() => joining.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        await WaitForLostAsync(first.Lost);
        await WaitForLostAsync(held.Lost);
        goOn.SetResult();
        Exception? loopFailure = await Record.ExceptionAsync(() => loop.WaitAsync(Bound));

        loopFailure.Should().Match<Exception>(e => e is PostgresLeaseLostException || e is PostgresCoordinationException, "the loop's next step is told its item was lost");
        var items = new List<(int, int)>();
        for (int i = 0; i < 2; i++)
        {
            await using PostgresDelivery<int> d = await queueB.GetAsync(Bound);
            items.Add((d.Item, d.Attempt));
            await d.CompleteAsync();
        }

        items.Should().BeEquivalentTo([(first.Item, 2), (3 - first.Item, 1)]);
        await queueB.JoinAsync(Bound);
        await using PostgresLease after = await b.Coordinator.CreateLock("job").AcquireAsync(Bound);
        after.FencingToken.Should().BeGreaterThan(held.FencingToken);
    }

    [PostgresRestartFact]
    public async Task ServerRestart_AWaitWithATimeout_IsFailedTyped_NotTimedOut()
    {
        using var waiters = new Microsoft.Extensions.Diagnostics.Metrics.Testing.MetricCollector<long>(null, "AsyncPrimitives.Postgres", "asynctools.waiters");
        Member a = await JoinAsync();
        PostgresQueue<int> queue = a.Coordinator.CreateQueue<int>("empty");
        Task<PostgresDelivery<int>> waiting = queue.GetAsync(TimeSpan.FromSeconds(6)).AsTask();
        await EventuallyAsync(
            () => Task.FromResult(waiters.GetMeasurementSnapshot().Where(m => Equals(m.Tags.GetValueOrDefault("asynctools.name"), "empty")).Sum(m => m.Value) == 1),
            "the getter sleeps");
        var clock = Stopwatch.StartNew();
        Server.Restart();
        TimeSpan restarted = clock.Elapsed;
        Exception? failure = await Record.ExceptionAsync(() => waiting.WaitAsync(Bound));

        failure.Should().BeOfType<PostgresCoordinationException>($"restart took {restarted}, the wait ended at {clock.Elapsed}");
    }

    /// <summary>Waits (at most <see cref="PostgresTest.Bound"/>) until the queue has nothing unfinished, reading through
    /// the failures of a server that is coming back.</summary>
    private static Task UntilNothingUnfinishedAsync(PostgresQueue<int> probe) => EventuallyAsync(
        async () =>
        {
            try
            {
                return await probe.UnfinishedAsync() == 0;
            }
            catch (PostgresCoordinationException)
            {
                return false;
            }
        },
        "every item is finished");

    /// <summary>The failures seen by producers and consumers under faults: typed ones (what the package promises to
    /// throw) by type name, any other in full.</summary>
    /// <param name="cancellationIsTyped">Whether the caller's own cancellation can end the calls (a stop token).</param>
    private sealed class Failures(bool cancellationIsTyped)
    {
        public System.Collections.Concurrent.ConcurrentBag<string> Typed { get; } = [];

        public System.Collections.Concurrent.ConcurrentBag<string> Unexpected { get; } = [];

        public void Record(Exception e)
        {
            if (e is PostgresCoordinationException or PostgresLeaseLostException or TimeoutException
                || (cancellationIsTyped && e is OperationCanceledException))
            {
                Typed.Add(e.GetType().Name);
            }
            else
            {
                Unexpected.Add(e.GetType().FullName + ": " + e.Message);
            }
        }
    }

    /// <summary>Puts <paramref name="item"/>, recording whether the put returned (true) or failed (false: it may still
    /// have been put) and handing a failure to <paramref name="record"/>.</summary>
    private static async Task PutRecordingAsync(
        PostgresQueue<int> queue, int item, System.Collections.Concurrent.ConcurrentDictionary<int, bool> put, Action<Exception> record)
    {
        try
        {
            await queue.PutAsync(item);
            put[item] = true;
        }
#pragma warning disable CA1031 // Recorded: a test of what fails, and how.
        catch (Exception e)
#pragma warning restore CA1031
        {
            put[item] = false;
            record(e);
        }
    }
}
