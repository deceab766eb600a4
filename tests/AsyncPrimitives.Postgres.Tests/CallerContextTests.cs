using System.Transactions;
using AsyncPrimitives.Postgres.Tests.Support;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Calls made inside the caller's <see cref="TransactionScope"/> (Npgsql enlists a connection opened in one, by
/// default): each call is still a transaction of its own, committed when the call returns, whatever the scope does.
/// </summary>
public sealed class AmbientTransactionTests(PostgresServer server) : PostgresTest(server)
{
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
