using AsyncPrimitives;
using AsyncTools.StressTests.Histories;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Schedules;

/// <summary>
/// Every schedule of a small <see cref="AsyncCondition"/> scenario: a waiter takes the lock and waits on the condition
/// with a timeout and a token; a notifier takes the lock and notifies; a canceller cancels the token; the timer and the
/// continuations. After each schedule: the wait's outcome is the sequential model's for the order in which the steps
/// took effect (notified, timed out or cancelled, whichever reached it first while it waited; cancelled at once if the
/// token was cancelled before the call), the waiter held the lock again whenever it returned (mutual exclusion
/// throughout), and the lock is free with nobody left in either line.
/// </summary>
public sealed class ConditionScheduleTests(ITestOutputHelper output) : ScheduleTestBase(output)
{
    [Fact]
    public void AsyncCondition_NotifyCancelTimerAndReacquire_EveryScheduleMatchesTheModel()
    {
        Exploration result = Explore("AsyncCondition", () => new ConditionModel { Tokens = { ["w"] = "c1" } }, (schedule, seen, model) =>
        {
            var gate = new AsyncLock(schedule.Time);
            var condition = new AsyncCondition(gate, schedule.Time);
            var token = new CancellationTokenSource();

            schedule.Spawn("waiter", () => seen.Track("waiter", Waiter));
            schedule.Spawn("notifier", () => seen.Track("notifier", Notifier));
            schedule.Spawn("canceller", () =>
            {
                schedule.Event("cancel c1");
                token.Cancel();
            });

            return outcome =>
            {
                gate.IsLocked.Should().BeFalse();
                gate.Lines.Waiting.Should().Be(0);
                condition.Lines.Waiting.Should().Be(0);
                return outcome;
            };

            async Task Waiter()
            {
                await gate.AcquireAsync();
                seen.Enter();
                schedule.Time.Arming = "w";
                schedule.Event("wait w");
                seen.Exit(); // the wait lets the lock go while it waits
                ValueTask wait = condition.WaitAsync(TimeSpan.FromHours(1), token.Token);
                string outcome = Outcome.Ok;
                try
                {
                    await wait;
                }
                catch (Exception error) when (error is OperationCanceledException or TimeoutException)
                {
                    outcome = Outcome.Of(error);
                }

                seen.Enter(); // it holds the lock again, whatever the outcome
                seen.Record("w", outcome);
                seen.Exit();
                gate.Release();
            }

            async Task Notifier()
            {
                await gate.AcquireAsync();
                seen.Enter();
                schedule.Event("notify");
                condition.Notify();
                seen.Exit();
                gate.Release();
            }
        }, everyStep: false);

        result.Outcomes.Keys.Should().Contain(["w=ok", "w=canceled", "w=timeout"]);
        result.Schedules.Should().Be(59, "the exhaustive count on this engine");
    }

    /// <summary>One condition line: <c>wait w</c> joins it (or fails at once on a cancelled token), <c>notify</c>
    /// serves its oldest waiter.</summary>
    private sealed class ConditionModel : Model
    {
        protected override void Apply(string verb, string argument)
        {
            switch (verb)
            {
                case "wait" when CancelledOnArrival(argument):
                    break;
                case "wait":
                    Enqueue(argument);
                    break;
                case "notify":
                    ServeOldest();
                    break;
                default:
                    throw new InvalidOperationException($"Unknown step {verb}.");
            }
        }
    }
}
