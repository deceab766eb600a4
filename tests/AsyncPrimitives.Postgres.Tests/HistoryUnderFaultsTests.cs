using System.Collections.Concurrent;
using System.Diagnostics;
using AsyncPrimitives.Postgres.Tests.Support;
using Npgsql;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// History checks across processes with faults injected: three coordinators (one behind a TCP proxy) run a semaphore
/// and a queue concurrently while their backends are terminated (<c>pg_terminate_backend</c>) and the proxied one's
/// connections are dropped, at seeded random moments. Every call is recorded with its time on one clock; afterwards
/// the history is checked: never more holders than the limit among leases that were not lost, fencing tokens never
/// repeat, nothing leaks; every item whose put returned is completed, exactly one completion per item succeeds, and
/// an item is delivered again only after a delivery of it ended without completing (its lease was lost, or its
/// process's connection died).
/// </summary>
/// <remarks>Bounded: a fixed number of rounds and faults (about 10 s per test on two cores); the seed is printed.</remarks>
public sealed class HistoryUnderFaultsTests(PostgresServer server) : PostgresTest(server)
{
    private const int Workers = 2; // per coordinator
    private const int Rounds = 15; // per worker
    private const int Faults = 6;
    private static readonly TimeSpan LeaseDuration = TimeSpan.FromSeconds(2);

    [PostgresFact]
    public async Task Semaphore_UnderTerminatedBackendsAndDroppedConnections_NeverMoreHoldersThanTheLimit()
    {
        const int limit = 2;
        int seed = Environment.TickCount & 0x7fff;
        var rng = new Random(seed);
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member[] members = await JoinAllAsync(proxy);
        var clock = Stopwatch.StartNew();
        var leases = new ConcurrentBag<Hold>();
        var errors = new ConcurrentBag<string>();

        Task[] workers = members.SelectMany((m, i) => Enumerable.Range(0, Workers).Select(w => Task.Run(async () =>
        {
            var r = new Random(seed * 31 + (i * Workers) + w);
            PostgresSemaphore semaphore = m.Coordinator.CreateSemaphore("history", limit);
            for (int round = 0; round < Rounds; round++)
            {
                try
                {
                    PostgresLease? lease = r.Next(3) == 0
                        ? await semaphore.TryAcquireAsync()
                        : await semaphore.AcquireAsync(TimeSpan.FromSeconds(1));
                    if (lease is null)
                    {
                        continue;
                    }

                    var hold = new Hold(m.Application, lease.FencingToken, clock.Elapsed);
                    using CancellationTokenRegistration onLost = lease.Lost.Register(() => hold.LostAt ??= clock.Elapsed);
                    leases.Add(hold);
                    // The work done under the permit, 0 to 30 ms: part of the scenario, not a wait for anything. The
                    // holds overlap one another (what the limit check counts) and the faults injected meanwhile.
                    await Task.Delay(r.Next(0, 30));
                    hold.ReleasedAt = clock.Elapsed;
                    await lease.ReleaseAsync();
                }
                catch (Exception e) when (e is PostgresCoordinationException or TimeoutException or NpgsqlException)
                {
                    errors.Add(e.GetType().Name); // a fault reached this call: a typed exception, then go on
                }
            }
        }))).ToArray();

        var faultsAt = new ConcurrentBag<(string Member, TimeSpan From, TimeSpan To)>();
        int faults = await InjectFaultsAsync(rng, members, proxy, workers, clock, faultsAt);
        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(60));

        // Among leases whose holder saw no fault while it held (a killed session's permit is free for the others at
        // once, and its holder learns of it through Lost within the lease duration), at no moment are more than
        // `limit` held.
        var events = leases.Where(h => h.LostAt is null && !faultsAt.Any(f => f.Member == h.Holder && f.From <= h.ReleasedAt && h.AcquiredAt <= f.To))
            .SelectMany(h => new[] { (At: h.AcquiredAt, Delta: 1), (At: h.ReleasedAt!.Value, Delta: -1) })
            .OrderBy(e => e.At).ThenBy(e => e.Delta);
        int held = 0, peak = 0;
        foreach ((_, int delta) in events)
        {
            held += delta;
            peak = Math.Max(peak, held);
        }

        string because = $"seed {seed}: {leases.Count} leases, {faults} faults, {errors.Count} calls failed by a fault";
        peak.Should().BeLessThanOrEqualTo(limit, because);
        leases.Select(h => h.Token).Should().OnlyHaveUniqueItems(because + ": fencing tokens never repeat");
        leases.Count.Should().BeGreaterThan(Rounds, because + ": the history is not empty");
        await EventuallyAsync(async () => await members[0].Coordinator.CreateSemaphore("history", limit).GetCurrentCountAsync() == limit, "every permit is back");

        // A permit of a session that died is taken back by the first acquire that needs it: taking every permit from a
        // healthy coordinator, then releasing them, leaves nothing behind.
        PostgresSemaphore healthy = (await JoinAsync()).Coordinator.CreateSemaphore("history", limit);
        await EventuallyAsync(
            async () =>
            {
                var all = new List<PostgresLease>();
                try
                {
                    for (int i = 0; i < limit; i++)
                    {
                        all.Add(await healthy.AcquireAsync(TimeSpan.FromSeconds(2)));
                    }
                }
                catch (TimeoutException)
                {
                    // A dead holder not yet seen as dead: try again (bounded by EventuallyAsync).
                }

                foreach (PostgresLease lease in all)
                {
                    await lease.ReleaseAsync();
                }

                return all.Count == limit && await PermitRowsAsync() == (0L, 0L);
            },
            because + ": nothing left in the tables");
    }

    [PostgresFact]
    public async Task Queue_UnderTerminatedBackendsAndDroppedConnections_LosesNothing_AndRedeliversOnlyAfterALostLease()
    {
        int seed = Environment.TickCount & 0x7fff;
        var rng = new Random(seed);
        await using var proxy = new TcpProxy("127.0.0.1", new NpgsqlConnectionStringBuilder(Server.ConnectionString).Port);
        Member[] members = await JoinAllAsync(proxy);
        var options = new PostgresQueueOptions { MaxAttempts = 1000 }; // faults must not move items to the dead letters
        var put = new ConcurrentDictionary<int, bool>(); // item -> the put returned (true) or threw (false: maybe enqueued)
        var deliveries = new ConcurrentBag<Delivery>();
        var errors = new ConcurrentBag<string>();
        int next = 0;

        Task[] producers = members.Select((m, i) => Task.Run(async () =>
        {
            PostgresQueue<int> queue = m.Coordinator.CreateQueue<int>("history", options);
            for (int round = 0; round < Rounds * Workers; round++)
            {
                int item = Interlocked.Increment(ref next);
                try
                {
                    await queue.PutAsync(item);
                    put[item] = true;
                }
                catch (Exception e) when (e is PostgresCoordinationException or NpgsqlException or TimeoutException)
                {
                    put[item] = false;
                    errors.Add(e.GetType().Name);
                }
            }
        })).ToArray();

        Task[] consumers = members.SelectMany((m, i) => Enumerable.Range(0, Workers).Select(w => Task.Run(async () =>
        {
            var r = new Random(seed * 17 + (i * Workers) + w);
            PostgresQueue<int> queue = m.Coordinator.CreateQueue<int>("history", options);
            for (int round = 0; round < Rounds; round++)
            {
                await ConsumeOneAsync(queue, m.Application, r, deliveries, errors);
            }
        }))).ToArray();

        Task[] all = [.. producers, .. consumers];
        int faults = await InjectFaultsAsync(rng, members, proxy, all, Stopwatch.StartNew(), []);
        await Task.WhenAll(all).WaitAsync(TimeSpan.FromSeconds(60));

        // Drain what is left from a coordinator no fault touched any more, until nothing is unfinished.
        Member healthy = await JoinAsync(o => o.LeaseDuration = LeaseDuration);
        PostgresQueue<int> drain = healthy.Coordinator.CreateQueue<int>("history", options);
        var quiet = new Random(seed);
        var deadline = Stopwatch.StartNew();
        while (await drain.UnfinishedAsync() > 0 && deadline.Elapsed < TimeSpan.FromSeconds(30))
        {
            await ConsumeOneAsync(drain, healthy.Application, quiet, deliveries, errors, complete: true);
        }

        string because = $"seed {seed}: {put.Count} puts, {deliveries.Count} deliveries, {faults} faults, {errors.Count} calls failed by a fault";
        (await drain.UnfinishedAsync()).Should().Be(0, because);
        (await drain.DeadLetterCountAsync()).Should().Be(0, because);
        var byItem = deliveries.GroupBy(d => d.Item).ToDictionary(g => g.Key, g => g.OrderBy(d => d.Attempt).ToList());
        foreach ((int item, bool returned) in put)
        {
            List<Delivery> its = byItem.GetValueOrDefault(item) ?? [];
            its.Count(d => d.Completed).Should().BeLessThanOrEqualTo(1, $"{because}: item {item} is completed at most once");
            if (returned)
            {
                its.Count(d => d.Completed || d.CompleteUncertain).Should().BeGreaterThanOrEqualTo(1, $"{because}: item {item} was put, so it is delivered and completed");
            }

            its.Select(d => d.Attempt).Should().OnlyHaveUniqueItems($"{because}: item {item}'s attempts are counted by the server");
            foreach (Delivery earlier in its.Take(its.Count - 1))
            {
                earlier.Completed.Should().BeFalse($"{because}: item {item} was redelivered (attempt {its[^1].Attempt}) only after a delivery that did not complete");
            }
        }

        byItem.Keys.Should().BeSubsetOf(put.Keys, because + ": nothing is delivered that was not put");
    }

    private static async Task ConsumeOneAsync(PostgresQueue<int> queue, string consumer, Random r, ConcurrentBag<Delivery> deliveries, ConcurrentBag<string> errors, bool complete = false)
    {
        PostgresDelivery<int> delivery;
        try
        {
            delivery = await queue.GetAsync(TimeSpan.FromSeconds(1));
        }
        catch (Exception e) when (e is PostgresCoordinationException or NpgsqlException or TimeoutException)
        {
            errors.Add(e.GetType().Name);
            return;
        }

        var record = new Delivery(delivery.Item, delivery.Attempt, consumer);
        deliveries.Add(record);
        try
        {
            if (!complete && r.Next(5) == 0)
            {
                await delivery.AbandonAsync(); // back to the queue: a redelivery that is not a loss
                return;
            }

            if (!complete)
            {
                // The work done on the item, 0 to 20 ms: part of the scenario, not a wait for anything. A fault may
                // land between the delivery and its completion (the lease lost, or the completion's outcome unknown).
                await Task.Delay(r.Next(0, 20));
            }

            await delivery.CompleteAsync();
            record.Completed = true;
        }
        catch (PostgresLeaseLostException)
        {
            // The lease was lost: the item may be with another consumer; this delivery did not complete.
        }
        catch (Exception e) when (e is PostgresCoordinationException or NpgsqlException or TimeoutException)
        {
            record.CompleteUncertain = true; // the connection died during the call: it may or may not have committed
            errors.Add(e.GetType().Name);
        }
        finally
        {
            await delivery.DisposeAsync();
        }
    }

    /// <summary>Three coordinators with 2 s leases: two direct, one through <paramref name="proxy"/>.</summary>
    private async Task<Member[]> JoinAllAsync(TcpProxy proxy) =>
    [
        await JoinAsync(o => o.LeaseDuration = LeaseDuration),
        await JoinAsync(o => o.LeaseDuration = LeaseDuration),
        await JoinAsync(o => o.LeaseDuration = LeaseDuration, port: proxy.Port),
    ];

    /// <summary>While the workers run: <see cref="Faults"/> faults at seeded random moments, each either every backend
    /// of one coordinator terminated or the proxied coordinator's connections dropped. Returns how many were injected.</summary>
    private async Task<int> InjectFaultsAsync(Random rng, Member[] members, TcpProxy proxy, Task[] workers, Stopwatch clock, ConcurrentBag<(string Member, TimeSpan From, TimeSpan To)> faultsAt)
    {
        int injected = 0;
        Task all = Task.WhenAll(workers);
        for (int i = 0; i < Faults && !all.IsCompleted; i++)
        {
            // The spacing of the faults, 100 to 600 ms of the workers' run: part of the scenario, not a wait for anything
            // (the moment of a fault is what is random). It ends early once the workers are done.
            await Task.WhenAny(all, Task.Delay(rng.Next(100, 600)));
            if (all.IsCompleted)
            {
                break;
            }

            Member hit = rng.Next(3) == 0 ? members[^1] : members[rng.Next(members.Length)];
            TimeSpan from = clock.Elapsed;
            if (hit == members[^1] && rng.Next(2) == 0)
            {
                proxy.Sever();
            }
            else
            {
                await TerminateAsync(hit);
            }

            faultsAt.Add((hit.Application, from, clock.Elapsed + TimeSpan.FromSeconds(1))); // a killed backend takes a moment to die

            injected++;
        }

        return injected;
    }

    private sealed class Hold(string holder, long token, TimeSpan acquiredAt)
    {
        public string Holder => holder;

        public long Token => token;

        public TimeSpan AcquiredAt => acquiredAt;

        public TimeSpan? ReleasedAt { get; set; }

        public TimeSpan? LostAt { get; set; }
    }

    private sealed class Delivery(int item, int attempt, string consumer)
    {
        public int Item => item;

        public int Attempt => attempt;

        public string Consumer => consumer;

        public bool Completed { get; set; }

        public bool CompleteUncertain { get; set; }
    }
}
