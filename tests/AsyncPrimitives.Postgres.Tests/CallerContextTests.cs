using System.Transactions;
using AsyncPrimitives.Postgres.Tests.Support;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// What the caller's context must not change. Calls made inside the caller's <see cref="TransactionScope"/> (Npgsql
/// enlists a connection opened in one, by default) are each still a transaction of its own, committed when the call
/// returns, whatever the scope does. The coordinator's own work that a call starts (its session, heartbeat, LISTEN
/// loop) does not carry that call's <see cref="ExecutionContext"/> (its <c>AsyncLocal</c> values: an <c>Activity</c>, a
/// scope) for the rest of its life.
/// </summary>
public sealed class CallerContextTests(PostgresServer server) : PostgresTest(server)
{
    private static readonly AsyncLocal<string?> s_caller = new();

    [PostgresFact]
    public async Task TheSessionAndHeartbeat_AFirstCallStarts_DoNotCarryItsAsyncLocalValues()
    {
        var time = new RecordingTimeProvider();
        Member member = await JoinAsync(o =>
        {
            o.TimeProvider = time;
            o.LeaseDuration = TimeSpan.FromSeconds(1); // a beat every third of a second
        });
        PostgresLock gate = member.Coordinator.CreateLock("context");

        // The coordinator's first call (it opens the session, whose heartbeat runs for the coordinator's life), made
        // with a value of the caller's own.
        PostgresLease lease = await AcquireAsCallerAsync(gate);
        int mark = time.Seen.Count;

        // The heartbeat waits for each beat on the coordinator's clock: each of its timers records what it saw.
        await EventuallyAsync(() => Task.FromResult(time.Seen.Count >= mark + 3), "the heartbeat beat three times");
        time.Seen.Skip(mark).Should().AllSatisfy(seen => seen.Should().BeNull("the heartbeat is not the caller's work"));
        lease.Lost.IsCancellationRequested.Should().BeFalse("the heartbeat renewed the lease meanwhile");
        await lease.DisposeAsync();
    }

    private static async Task<PostgresLease> AcquireAsCallerAsync(PostgresLock gate)
    {
        s_caller.Value = "the first caller"; // flows into the call, and is gone from the test's flow when this returns
        return await gate.AcquireAsync(Bound);
    }

    /// <summary>The system clock, recording the caller's value seen by each timer created.</summary>
    private sealed class RecordingTimeProvider : TimeProvider
    {
        public System.Collections.Concurrent.ConcurrentQueue<string?> Seen { get; } = new();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Seen.Enqueue(s_caller.Value);
            return System.CreateTimer(callback, state, dueTime, period);
        }
    }

    [PostgresFact]
    public async Task QueueCalls_InsideScopesThatRollBack_StillCommit()
    {
        Member member = await JoinAsync();
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("scoped");

        using (new TransactionScope(TransactionScopeAsyncFlowOption.Enabled))
        {
            await queue.PutAsync(1); // "in its own transaction"
        } // not completed: the scope's transaction rolls back

        (await queue.CountAsync()).Should().Be(1);

        using (new TransactionScope(TransactionScopeAsyncFlowOption.Enabled))
        {
            PostgresDelivery<int> delivery = await queue.GetAsync(Bound);
            await delivery.CompleteAsync();
        }

        (await queue.UnfinishedAsync()).Should().Be(0, "the completion committed");
    }

    [PostgresFact]
    public async Task ALockTakenAndReleasedInsideAScope_IsSeenSoByOtherProcesses_BeforeTheScopeEnds()
    {
        Member member = await JoinAsync();
        Member other = await JoinAsync();
        PostgresLock gate = member.Coordinator.CreateLock("scoped");
        PostgresLock otherGate = other.Coordinator.CreateLock("scoped");

        using (new TransactionScope(TransactionScopeAsyncFlowOption.Enabled))
        {
            // The coordinator's first call: its session (LISTEN connection, heartbeat) starts inside the scope too.
            PostgresLease lease = await gate.AcquireAsync(Bound);
            (await otherGate.TryAcquireAsync().AsTask().WaitAsync(Bound)).Should().BeNull("the grant committed: the lock is held");
            await lease.DisposeAsync();

            PostgresLease? taken = await otherGate.TryAcquireAsync().AsTask().WaitAsync(Bound);
            taken.Should().NotBeNull("the release committed: the lock is free");
            await taken!.DisposeAsync();
        } // not completed

        // The session started in the scope outlives it.
        await using PostgresLease again = await gate.AcquireAsync(Bound);
        again.Lost.IsCancellationRequested.Should().BeFalse();
    }
}
