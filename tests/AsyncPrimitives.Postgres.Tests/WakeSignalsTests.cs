using AsyncPrimitives.Postgres.Internal;
using FluentAssertions;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Which local waits a signal wakes: at most the key's wake limit of those not woken already, first in line first (a
/// permit wait's ticket, then the order they entered), so a release or a put does not send every wait to the server.
/// No server needed.
/// </summary>
public sealed class WakeSignalsTests
{
    [Fact]
    public void Signal_WakesTheWaitFirstInLine_NotEveryWait()
    {
        var signals = new WakeSignals();
        using WakeSignals.Waiter third = Enter(signals, "l:a", rank: 30);
        using WakeSignals.Waiter first = Enter(signals, "l:a", rank: 10);
        using WakeSignals.Waiter second = Enter(signals, "l:a", rank: 20);
        Task[] armed = [first.Arm(), second.Arm(), third.Arm()];

        signals.Signal("l:a");

        armed.Select(t => t.IsCompleted).Should().Equal(true, false, false);

        signals.Signal("l:a"); // the first has not asked the server since: the next signal goes to the next in line

        armed.Select(t => t.IsCompleted).Should().Equal(true, true, false);
    }

    [Fact]
    public void Signal_WakesWaitsWithoutATicket_InTheOrderTheyEntered_AfterTheRankedOnes()
    {
        var signals = new WakeSignals();
        using WakeSignals.Waiter early = Enter(signals, "q:a");
        using WakeSignals.Waiter late = Enter(signals, "q:a");
        using WakeSignals.Waiter ranked = Enter(signals, "q:a", rank: 5);
        Task[] armed = [ranked.Arm(), early.Arm(), late.Arm()];

        signals.Signal("q:a");
        signals.Signal("q:a");

        armed.Select(t => t.IsCompleted).Should().Equal(true, true, false);
    }

    [Fact]
    public void Signal_WakesUpToTheLimit_AndEveryWaitWithNoLimit()
    {
        var signals = new WakeSignals();
        WakeSignals.Waiter[] permits = [.. Enumerable.Range(0, 5).Select(_ => signals.Enter("s:a", wakeLimit: 3))];
        WakeSignals.Waiter[] joins = [.. Enumerable.Range(0, 5).Select(_ => signals.Enter("j:a", wakeLimit: int.MaxValue))];
        Task[] permitTasks = [.. permits.Select(w => w.Arm())];
        Task[] joinTasks = [.. joins.Select(w => w.Arm())];

        signals.Signal("s:a");
        signals.Signal("j:a");

        permitTasks.Count(t => t.IsCompleted).Should().Be(3);
        joinTasks.Should().OnlyContain(t => t.IsCompleted);
        foreach (WakeSignals.Waiter waiter in permits.Concat(joins))
        {
            waiter.Dispose();
        }

        signals.Count.Should().Be(0);
    }

    [Fact]
    public void AWaitThatLeavesWithAnUnusedWake_PassesItOn_AndOneThatUsedIt_DoesNot()
    {
        var signals = new WakeSignals();
        WakeSignals.Waiter first = Enter(signals, "l:a", rank: 1);
        using WakeSignals.Waiter second = Enter(signals, "l:a", rank: 2);
        using WakeSignals.Waiter third = Enter(signals, "l:a", rank: 3);
        _ = first.Arm();
        Task secondWoken = second.Arm();
        Task thirdWoken = third.Arm();

        signals.Signal("l:a"); // to the first, which leaves (cancelled) before asking the server
        first.Dispose();

        secondWoken.IsCompleted.Should().BeTrue();

        _ = second.Arm(); // the second asks the server: it used its wake
        second.Dispose();

        thirdWoken.IsCompleted.Should().BeFalse();
    }

    [Fact]
    public void ASignalDuringTheCall_IsKeptForTheSleepAfterIt()
    {
        var signals = new WakeSignals();
        using WakeSignals.Waiter waiter = Enter(signals, "q:a");
        Task beforeCall = waiter.Arm();

        signals.Signal("q:a"); // arrives while the call runs

        beforeCall.IsCompleted.Should().BeTrue(); // the sleep after the call ends at once
        waiter.Arm().IsCompleted.Should().BeFalse(); // and the next call uses it up
    }

    /// <summary>Enters a wait on <paramref name="key"/> that a signal wakes alone (wake limit 1, as a lock's or a
    /// getter's), with the rank of its ticket when it has one.</summary>
    private static WakeSignals.Waiter Enter(WakeSignals signals, string key, long? rank = null)
    {
        WakeSignals.Waiter waiter = signals.Enter(key, wakeLimit: 1);
        if (rank is long ticket)
        {
            waiter.SetRank(ticket);
        }

        return waiter;
    }
}
