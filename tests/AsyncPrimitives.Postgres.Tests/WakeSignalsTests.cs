using AsyncPrimitives.Postgres.Internal;
using FluentAssertions;
using Microsoft.Extensions.Time.Testing;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// Which local waits a signal wakes: at most the key's wake limit of those not woken already, first in line first (a
/// permit wait's ticket, then the order they entered), so a release or a put does not send every wait to the server;
/// and which waits poll between signals. No server needed.
/// </summary>
public sealed class WakeSignalsTests
{
    [Fact]
    public void Signal_WakesTheWaitFirstInLine_NotEveryWait()
    {
        var signals = new WakeSignals(TimeProvider.System);
        using WakeSignals.Waiter third = Enter(signals, "l:a", rank: 30);
        using WakeSignals.Waiter first = Enter(signals, "l:a", rank: 10);
        using WakeSignals.Waiter second = Enter(signals, "l:a", rank: 20);
        Task[] armed = [first.Arm(), second.Arm(), third.Arm()];

        signals.Signal("l:a");

        armed.Select(t => t.IsCompleted).Should().Equal(true, false, false);

        signals.Signal("l:a"); // the first has not asked the server since: the next signal goes to the next in line

        armed.Select(t => t.IsCompleted).Should().Equal(true, true, false);
    }

    /// <summary>A permit wait whose first call has not answered may be first in the server's line, and the release the
    /// signal announces may have granted it its permit: once its ticket is known, a signal that passed it over wakes it
    /// if it is among the first in line, so that it asks again instead of sleeping until its next poll.</summary>
    [Fact]
    public void ASignalThatPassedOverAWaitWithoutATicket_WakesIt_OnceItsTicketIsAmongTheFirst()
    {
        var signals = new WakeSignals(TimeProvider.System);
        using WakeSignals.Waiter early = Enter(signals, "l:a"); // its first call, which will give it a ticket, still runs
        using WakeSignals.Waiter late = Enter(signals, "l:a");
        using WakeSignals.Waiter known = Enter(signals, "l:a", rank: 5);
        Task[] armed = [known.Arm(), early.Arm(), late.Arm()];

        signals.Signal("l:a");

        armed.Select(t => t.IsCompleted).Should().Equal(true, false, false);

        early.SetRank(3); // ahead of the wait the signal woke: the release may have granted it the lock
        late.SetRank(7);

        armed.Select(t => t.IsCompleted).Should().Equal(true, true, false);
    }

    /// <summary>Only a signal that came while the wait was asking counts: a wait that gets its ticket with no signal
    /// since it asked is not woken, first in line or not.</summary>
    [Fact]
    public void AWaitGettingItsTicket_WithNoSignalSinceItAsked_IsNotWoken()
    {
        var signals = new WakeSignals(TimeProvider.System);
        using WakeSignals.Waiter known = Enter(signals, "l:a", rank: 5);
        using WakeSignals.Waiter first = Enter(signals, "l:a");
        _ = known.Arm();
        signals.Signal("l:a"); // wakes the known wait; passes over the new one, which has not asked yet
        Task firstWoken = first.Arm(); // it asks now: its call sees what the signal announced

        first.SetRank(3);

        firstWoken.IsCompleted.Should().BeFalse();
    }

    /// <summary>Getters have no ticket: the limit alone bounds them, in the order they entered.</summary>
    [Fact]
    public void Signal_WakesGettersUpToTheLimit_InTheOrderTheyEntered()
    {
        var signals = new WakeSignals(TimeProvider.System);
        using WakeSignals.Waiter early = Enter(signals, "q:a");
        using WakeSignals.Waiter late = Enter(signals, "q:a");
        Task[] armed = [early.Arm(), late.Arm()];

        signals.Signal("q:a");

        armed.Select(t => t.IsCompleted).Should().Equal(true, false);
    }

    [Fact]
    public void Signal_WakesUpToTheLimit_AndEveryWaitWithNoLimit()
    {
        var signals = new WakeSignals(TimeProvider.System);
        WakeSignals.Waiter[] permits = [.. Enumerable.Range(0, 5).Select(i => Enter(signals, "s:a", rank: i + 1, wakeLimit: 3))];
        WakeSignals.Waiter[] joins = [.. Enumerable.Range(0, 5).Select(_ => Enter(signals, "j:a", wakeLimit: int.MaxValue))];
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
        var signals = new WakeSignals(TimeProvider.System);
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
        var signals = new WakeSignals(TimeProvider.System);
        using WakeSignals.Waiter waiter = Enter(signals, "q:a");
        Task beforeCall = waiter.Arm();

        signals.Signal("q:a"); // arrives while the call runs

        beforeCall.IsCompleted.Should().BeTrue(); // the sleep after the call ends at once
        waiter.Arm().IsCompleted.Should().BeFalse(); // and the next call uses it up
    }

    [Fact]
    public void OnlyTheWaitsASignalCouldWakeFirst_Poll_TheOthersSleepUntilSignalled()
    {
        var signals = new WakeSignals(TimeProvider.System);
        using WakeSignals.Waiter first = Enter(signals, "l:a", rank: 10);
        using WakeSignals.Waiter second = Enter(signals, "l:a", rank: 20);
        using WakeSignals.Waiter unranked = Enter(signals, "l:a");
        WakeSignals.Waiter[] semaphore = [.. new[] { 3L, 1L, 2L }.Select(rank => Enter(signals, "s:a", rank, wakeLimit: 2))];
        WakeSignals.Waiter[] getters = [.. Enumerable.Range(0, 3).Select(_ => Enter(signals, "q:a"))];
        WakeSignals.Waiter[] joins = [.. Enumerable.Range(0, 3).Select(_ => Enter(signals, "j:a", wakeLimit: int.MaxValue))];

        Polls(first).Should().BeTrue("the first in line polls, the backstop for a missed notification");
        Polls(second).Should().BeFalse("it cannot be served before the first, which polls for it");
        Polls(unranked).Should().BeTrue("a permit wait whose ticket is not known yet may be first in line");
        semaphore.Select(Polls).Should().Equal(false, true, true);
        getters.Should().OnlyContain(g => Polls(g), "any getter can take any item: the getters take turns (below)");
        joins.Should().OnlyContain(j => Polls(j), "a signal wakes every join");
        foreach (WakeSignals.Waiter waiter in semaphore.Concat(getters).Concat(joins))
        {
            waiter.Dispose();
        }
    }

    /// <summary>
    /// A queue's getters take turns: a poll is due a poll interval after the last look any of them made (counted from
    /// when its call was sent), and the getter whose timer finds it due first takes the turn; the others wait for that
    /// turn's look. So a hundred idle consumers make one call per interval, not a hundred. Each join polls on its own.
    /// </summary>
    [Fact]
    public void GettersTakeTurns_OnePollPerIntervalAmongThem_DueAfterTheLastLook()
    {
        var time = new FakeTimeProvider();
        var signals = new WakeSignals(time);
        TimeSpan interval = TimeSpan.FromSeconds(1);
        using WakeSignals.Waiter first = Enter(signals, "q:a");
        using WakeSignals.Waiter second = Enter(signals, "q:a");
        using WakeSignals.Waiter join = Enter(signals, "j:a", wakeLimit: int.MaxValue);
        first.Looked(time.GetTimestamp());
        time.Advance(TimeSpan.FromMilliseconds(200));
        second.Looked(time.GetTimestamp());
        time.Advance(TimeSpan.FromMilliseconds(800)); // the first has slept a poll interval since its call

        first.UntilTurn(interval).Should().Be(TimeSpan.FromMilliseconds(200), "the second's call was sent 800 ms ago");
        join.UntilTurn(interval).Should().Be(TimeSpan.Zero, "a join polls on its own");
        time.Advance(TimeSpan.FromMilliseconds(200));
        first.UntilTurn(interval).Should().Be(TimeSpan.Zero, "its turn: it polls");
        second.UntilTurn(interval).Should().Be(interval, "the turn is taken: it waits for its look");

        long sent = time.GetTimestamp();
        time.Advance(TimeSpan.FromMilliseconds(300));
        first.Looked(sent); // the turn's call answered

        second.UntilTurn(interval).Should().Be(TimeSpan.FromMilliseconds(700), "due a poll interval after that look");
    }

    /// <summary>
    /// A getter that leaves holding a turn it did not use (cancelled while its call waited for a connection) signals the
    /// key: the next getter looks at once. A turn whose call is held up at the server passes on an interval after it
    /// was taken.
    /// </summary>
    [Fact]
    public void ATurnLeftUnused_WakesTheNextGetter_AndOneHeldUpForAnInterval_PassesOn()
    {
        var time = new FakeTimeProvider();
        var signals = new WakeSignals(time);
        TimeSpan interval = TimeSpan.FromSeconds(1);
        WakeSignals.Waiter first = Enter(signals, "q:a");
        using WakeSignals.Waiter second = Enter(signals, "q:a");
        using WakeSignals.Waiter third = Enter(signals, "q:a");
        _ = first.Arm();
        Task secondWoken = second.Arm();
        Task thirdWoken = third.Arm();
        first.Looked(time.GetTimestamp());
        time.Advance(interval);
        first.UntilTurn(interval).Should().Be(TimeSpan.Zero);
        second.UntilTurn(interval).Should().Be(interval, "it waits for the first's look");

        first.Dispose();

        secondWoken.IsCompleted.Should().BeTrue("the turn was left unused: the next getter looks now");
        thirdWoken.IsCompleted.Should().BeFalse("one look is enough");
        second.UntilTurn(interval).Should().Be(TimeSpan.Zero, "no look yet, and no one has the turn");
        third.UntilTurn(interval).Should().Be(interval, "it waits for the second's look");
        time.Advance(interval); // the second's call is held up at the server
        third.UntilTurn(interval).Should().Be(TimeSpan.Zero, "a call held up does not hold up the next turn");
    }

    /// <summary>A clock whose readings step back (one built on wall-clock time) neither stops the getters' turns for
    /// the length of the step nor makes a getter sleep longer than the interval (a poll interval near its maximum would
    /// overflow a timer); a look sent after the step counts.</summary>
    [Fact]
    public void AClockThatStepsBack_DoesNotPutOffTheTurns()
    {
        var time = new SteppingClock();
        var signals = new WakeSignals(time);
        TimeSpan interval = TimeSpan.FromMinutes(1);
        using WakeSignals.Waiter first = Enter(signals, "q:a");
        using WakeSignals.Waiter second = Enter(signals, "q:a");
        first.Looked(time.GetTimestamp());

        time.Now -= TimeSpan.FromHours(1).Ticks;

        first.UntilTurn(interval).Should().Be(interval);
        time.Now += interval.Ticks; // it slept that interval; no getter looked meanwhile
        first.UntilTurn(interval).Should().Be(TimeSpan.Zero, "no getter has looked for an interval");
        first.Looked(time.GetTimestamp());
        time.Now -= TimeSpan.FromHours(1).Ticks;
        second.Looked(time.GetTimestamp()); // a call sent after the step
        time.Now += (interval + TimeSpan.FromSeconds(1)).Ticks;
        first.UntilTurn(interval).Should().Be(TimeSpan.Zero, "the last look was sent more than an interval ago");
    }

    /// <summary>A clock read as ticks of <see cref="TimeSpan"/>, set by the test.</summary>
    private sealed class SteppingClock : TimeProvider
    {
        public long Now { get; set; } = TimeSpan.FromDays(1).Ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Now;
    }

    public static TheoryData<string> WaysToStopBeingFirst => new() { "leaves", "queues again at the back" };

    /// <summary>
    /// The wait that becomes first in line polls from then on. When the first left (granted, or cancelled), it makes no
    /// call now (the lock just granted would be held); when the first queued again at the back (its place had expired),
    /// it asks at once: its own place, kept by the same heartbeat, may have expired too.
    /// </summary>
    [Theory, MemberData(nameof(WaysToStopBeingFirst))]
    public void WhenTheFirstInLine_StopsBeingFirst_TheWaitNowFirst_PollsFromThenOn(string how)
    {
        var signals = new WakeSignals(TimeProvider.System);
        WakeSignals.Waiter first = Enter(signals, "l:a", rank: 10);
        using WakeSignals.Waiter second = Enter(signals, "l:a", rank: 20);
        using WakeSignals.Waiter third = Enter(signals, "l:a", rank: 30);
        _ = first.Arm();
        Task secondWoken = second.Arm();
        Task thirdWoken = third.Arm();
        first.BeginSleep().Should().BeNull();
        Task secondPromoted = second.BeginSleep()!;
        Task thirdPromoted = third.BeginSleep()!;

        if (how == "leaves")
        {
            first.Dispose(); // granted, or cancelled: it had not been woken, so it has no wake to pass on
        }
        else
        {
            first.SetRank(40); // its place expired on the server: its call queued it again at the back
        }

        secondPromoted.IsCompleted.Should().BeTrue("the wait now first in line must poll from now on");
        secondWoken.IsCompleted.Should().Be(how != "leaves", "it asks at once only when its place may have expired");
        thirdPromoted.IsCompleted.Should().BeFalse("one wait is enough for a lock");
        thirdWoken.IsCompleted.Should().BeFalse();
        _ = second.Arm();
        Polls(second).Should().BeTrue();
        Polls(third).Should().BeFalse();
        first.Dispose();
    }

    [Fact]
    public void AWaitThatWasFirstWhenItSlept_StopsPollingAtItsNextSleep_OnceAWaitAheadOfItHasAPlace()
    {
        var signals = new WakeSignals(TimeProvider.System);
        using WakeSignals.Waiter later = Enter(signals, "l:a", rank: 20);
        using WakeSignals.Waiter earlier = Enter(signals, "l:a"); // its call, which got the lower ticket, still runs

        Polls(later).Should().BeTrue();
        earlier.SetRank(10);

        Polls(later).Should().BeFalse();
    }

    /// <summary>Whether <paramref name="waiter"/>, going to sleep, polls.</summary>
    private static bool Polls(WakeSignals.Waiter waiter) => waiter.BeginSleep() is null;

    /// <summary>Enters a wait on <paramref name="key"/> that a signal wakes alone (wake limit 1, as a lock's or a
    /// getter's) unless <paramref name="wakeLimit"/> says otherwise, polling as the waits of its kind do: on a lock or a
    /// semaphore (<c>l:</c>, <c>s:</c>) a permit wait, with the rank of its ticket when it has one; on a queue
    /// (<c>q:</c>) a getter; a join (<c>j:</c>).</summary>
    private static WakeSignals.Waiter Enter(WakeSignals signals, string key, long? rank = null, int wakeLimit = 1)
    {
        WakeSignals.Waiter waiter = signals.Enter(key, wakeLimit, key[0] switch
        {
            'q' => WakeSignals.Polling.ByTurns,
            'j' => WakeSignals.Polling.Each,
            _ => WakeSignals.Polling.FirstInLine,
        });
        if (rank is long ticket)
        {
            waiter.SetRank(ticket);
        }

        return waiter;
    }
}
