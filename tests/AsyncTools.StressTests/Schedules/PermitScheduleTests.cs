using AsyncPrimitives;
using AsyncTools.StressTests.Histories;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Schedules;

/// <summary>
/// Every schedule of small <see cref="AsyncLock"/> and <see cref="AsyncSemaphore"/> scenarios in which grants race with
/// cancellations, timer expiries and the waiters' own continuations (which recycle their node and wait again on it).
/// After each schedule: every wait's outcome is the one the sequential model gives for the order in which the steps
/// took effect (FIFO, a cancelled or expired waiter holds nothing, a cancellation that completed before a release wins
/// over it, a recycled node serves its new wait only), mutual exclusion held throughout, the permits are all back and
/// nobody is left in line.
/// And after every step, the waits the model has decided by then are exactly those whose outcome was delivered.
/// </summary>
public sealed class PermitScheduleTests(ITestOutputHelper output) : ScheduleTestBase(output)
{
    private static readonly TimeSpan s_timed = TimeSpan.FromHours(1); // fires only as a strand of the schedule

    /// <summary>
    /// The lock is held at the start. A waiter waits with a token (no timer, so its node is recycled when it reads its
    /// outcome); its continuation waits again with a timeout and a second token (on the recycled node, whose first
    /// token may be cancelled later), then releases the lock if the first wait got it. A releaser lets the first holder go; a canceller
    /// cancels the first token, then the second. A hook point between each call and its await lets a wait be decided
    /// before its awaiter parks.
    /// </summary>
    [Fact]
    public void AsyncLock_CancelTimerReleaseAndRecycle_EveryScheduleMatchesTheModel()
    {
        Exploration result = Explore("AsyncLock", () => new PermitModel(0) { Tokens = { ["a"] = "c1", ["b"] = "c2" } }, (schedule, seen, model) =>
        {
            var gate = new AsyncLock(schedule.Time);
            gate.TryAcquire(out _).Should().BeTrue();
            var first = new CancellationTokenSource();
            var second = new CancellationTokenSource();
            bool recycled = false;

            schedule.Spawn("waiter", () => seen.Track("waiter", Waiter));
            schedule.Spawn("releaser", () =>
            {
                schedule.Event("release");
                gate.Release();
            });
            schedule.Spawn("canceller", () =>
            {
                schedule.Event("cancel c1");
                first.Cancel();
                schedule.Yield();
                schedule.Event("cancel c2");
                second.Cancel();
            });

            return outcome =>
            {
                gate.IsLocked.Should().BeFalse("every holder released");
                gate.Lines.Waiting.Should().Be(0);
                return recycled ? outcome + " (b waited on a's recycled node)" : outcome;
            };

            async Task Waiter()
            {
                schedule.Event("arrive a");
                bool holds = await Acquire(gate.AcquireAsync(first.Token), "a");

                // The only node ever rented is a's: kept for reuse once a read its outcome, taken again if b must wait
                // (b's node is never returned: its timer is not the system's, so a late callback could still come).
                // If a holds the lock, b asks for it before a lets go, so b waits on a's node while a's token may
                // still be cancelled: that must not touch b.
                bool kept = gate.Lines.MaxPooled == 1;
                schedule.Time.Arming = "b";
                schedule.Event("arrive b");
                ValueTask<AsyncLock.Releaser> b = gate.AcquireAsync(s_timed, second.Token);
                recycled = kept && gate.Lines.MaxPooled == 0;
                if (holds)
                {
                    Release();
                }

                if (await Acquire(b, "b"))
                {
                    Release();
                }
            }

            async ValueTask<bool> Acquire(ValueTask<AsyncLock.Releaser> wait, string name)
            {
                seen.Started(name, wait);
                // A hook point between the call and its await: the wait may be decided before its awaiter parks (it then
                // resumes at once) or after (its continuation is posted and runs as a strand of its own).
                schedule.Yield();
                string outcome = Outcome.Ok;
                try
                {
                    await wait;
                    seen.Enter();
                }
                catch (Exception error) when (error is OperationCanceledException or TimeoutException)
                {
                    outcome = Outcome.Of(error);
                }

                seen.Record(name, outcome);
                return outcome == Outcome.Ok;
            }

            void Release()
            {
                seen.Exit();
                schedule.Event("release");
                gate.Release();
            }
        });

        result.Outcomes.Keys.Should().Contain([
            "a=canceled b=ok (b waited on a's recycled node)",
            "a=canceled b=timeout (b waited on a's recycled node)",
            "a=canceled b=canceled (b waited on a's recycled node)",
            "a=ok b=ok (b waited on a's recycled node)",
            "a=ok b=timeout (b waited on a's recycled node)",
            "a=ok b=canceled (b waited on a's recycled node)",
        ]);
        result.Schedules.Should().Be(LockSchedules);
    }

    /// <summary>
    /// A semaphore with no permits (at most 2). Two waiters: one with a token, one with a timeout; each releases its
    /// permit when its continuation runs. A releaser releases one permit, then another; a canceller cancels the token.
    /// </summary>
    [Fact]
    public void AsyncSemaphore_TwoWaitersCancelTimerAndReleases_EveryScheduleMatchesTheModel()
    {
        Exploration result = Explore("AsyncSemaphore", () => new PermitModel(0) { Tokens = { ["a"] = "c1" } }, (schedule, seen, model) =>
        {
            var semaphore = new AsyncSemaphore(0, 2, schedule.Time);
            var token = new CancellationTokenSource();

            schedule.Spawn("waiter a", () => seen.Track("waiter a", () => Waiter("a", () => semaphore.AcquireAsync(token.Token))));
            schedule.Spawn("waiter b", () => seen.Track("waiter b", () => Waiter("b", () => semaphore.AcquireAsync(s_timed))));
            schedule.Spawn("releaser", () =>
            {
                schedule.Event("release");
                semaphore.Release();
                schedule.Yield();
                schedule.Event("release");
                semaphore.Release();
            });
            schedule.Spawn("canceller", () =>
            {
                schedule.Event("cancel c1");
                token.Cancel();
            });

            return outcome =>
            {
                semaphore.CurrentCount.Should().Be(model.Permits).And.Be(2, "both permits are back");
                semaphore.Lines.Waiting.Should().Be(0);
                return outcome;
            };

            async Task Waiter(string name, Func<ValueTask<AsyncSemaphore.Releaser>> acquire)
            {
                schedule.Time.Arming = name;
                schedule.Event("arrive " + name);
                ValueTask<AsyncSemaphore.Releaser> wait = acquire();
                seen.Started(name, wait);
                string outcome = Outcome.Ok;
                try
                {
                    await wait;
                    seen.Enter(limit: 2);
                }
                catch (Exception error) when (error is OperationCanceledException or TimeoutException)
                {
                    outcome = Outcome.Of(error);
                }

                seen.Record(name, outcome);
                if (outcome == Outcome.Ok)
                {
                    seen.Exit();
                    schedule.Event("release");
                    semaphore.Release();
                }
            }
        });

        result.Outcomes.Keys.Should().Contain(["a=canceled b=ok", "a=canceled b=timeout", "a=ok b=ok", "a=ok b=timeout"]);
        result.Schedules.Should().Be(SemaphoreSchedules);
    }

    /// <summary>The exhaustive counts on this engine. A change in the engine's hook points (a timer created, a
    /// continuation posted, in more or fewer places) changes them; <see cref="ExplorerTests"/> shows that the explorer
    /// runs each interleaving exactly once.</summary>
    private const long LockSchedules = 342;

    /// <inheritdoc cref="LockSchedules"/>
    private const long SemaphoreSchedules = 1_983;
}
