using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// A call that grants a permit or leases items, whose answer comes after the lease's local deadline (the process or
/// its connection stalled for most of a lease): the process cannot count on what it got, so it gives it back at once
/// and the call fails; nothing stays held on the server by no one until it expires. The call is held at the server by
/// a transaction here while the coordinator's clock passes a lease duration.
/// </summary>
public sealed class LateAnswerTests(PostgresServer server) : PostgresTest(server)
{
    [PostgresFact]
    public async Task AGrantAnsweredAfterTheLeaseDuration_IsGivenBack_AndTheAcquireFails()
    {
        var time = new CountingTimeProvider();
        Member member = await JoinAsync(o => o.TimeProvider = time);
        Member other = await JoinAsync();
        PostgresLock theLock = member.Coordinator.CreateLock("late");

        Task<PostgresLease> acquiring = await CallHeldAtTheServerAsync(
            "SELECT @schema.permit_turn('l', 'late')", member,
            () => theLock.AcquireAsync(TimeSpan.FromSeconds(5)).AsTask(),
            () => time.Advance(member.Coordinator.LeaseDuration));

        var thrown = await FluentActions.Awaiting(() => acquiring.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        thrown.Which.Message.Should().Contain("given back");
        (await PermitRowsAsync()).Should().Be((0L, 0L), "nothing is granted to a call that throws");
        await using PostgresLease? taken = await other.Coordinator.CreateLock("late").TryAcquireAsync();
        taken.Should().NotBeNull("nobody holds the lock");
    }

    [PostgresFact]
    public async Task ItemsLeasedByACallAnsweredAfterTheLeaseDuration_AreGivenBack_AndTheGetFails()
    {
        var time = new CountingTimeProvider();
        Member member = await JoinAsync(o => o.TimeProvider = time);
        Member other = await JoinAsync();
        PostgresQueue<int> queue = member.Coordinator.CreateQueue<int>("late");
        await queue.PutAsync(7);

        Task<PostgresDelivery<int>> getting = await CallHeldAtTheServerAsync(
            "LOCK TABLE @schema.queue_items IN EXCLUSIVE MODE", member,
            () => queue.GetAsync(TimeSpan.FromSeconds(5)).AsTask(),
            () => time.Advance(member.Coordinator.LeaseDuration));

        var thrown = await FluentActions.Awaiting(() => getting.WaitAsync(Bound)).Should().ThrowAsync<PostgresCoordinationException>();
        thrown.Which.Message.Should().Contain("given back");
        await using PostgresDelivery<int>? again = await other.Coordinator.CreateQueue<int>("late").TryGetAsync();
        again.Should().NotBeNull("the item is back in line at once");
        again!.Attempt.Should().Be(2);
        await again.CompleteAsync();
    }
}
