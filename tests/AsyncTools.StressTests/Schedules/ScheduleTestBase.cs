using Xunit.Abstractions;

namespace AsyncTools.StressTests.Schedules;

/// <summary>
/// The base of the schedule tests: they run one at a time, and each writes its exploration's summary to the test
/// output. A scenario whose waits are checked against a sequential model gets fresh <see cref="Observations"/> and a
/// fresh model for every schedule (<see cref="Explore{TModel}"/>).
/// </summary>
[Collection("Schedules")] // one exploration at a time: each keeps a core busy (subclasses inherit it)
public abstract class ScheduleTestBase(ITestOutputHelper output)
{
    /// <summary>Explores every schedule of <paramref name="scenario"/> (see <see cref="Explorer.Explore"/>) and writes
    /// the summary to the test output.</summary>
    private protected Exploration Explore(string name, Func<Schedule, Func<string>> scenario)
    {
        Exploration result = Explorer.Explore(name, scenario);
        output.WriteLine(result.ToString());
        return result;
    }

    /// <summary>
    /// Explores every schedule of a scenario whose waits are checked against a sequential model. For each schedule,
    /// <paramref name="scenario"/> gets the schedule, fresh observations and a fresh model from
    /// <paramref name="newModel"/>, spawns its strands, and returns its own final check. Once no strand is runnable, the
    /// model replays the steps in the order they took effect and the observed outcomes must be exactly the model's;
    /// then the scenario's check gets that outcome, checks the object's final state, and returns what to count as the
    /// schedule's outcome. With <paramref name="everyStep"/>, also after every step: the waits the model has decided by
    /// then are exactly those whose outcome was delivered (<see cref="Observations.CheckDecided"/>).
    /// </summary>
    private protected Exploration Explore<TModel>(string name, Func<TModel> newModel, Func<Schedule, Observations, TModel, Func<string, string>> scenario, bool everyStep = true)
        where TModel : Model =>
        Explore(name, schedule =>
        {
            var seen = new Observations();
            TModel model = newModel();
            if (everyStep)
            {
                schedule.BetweenSteps = () => seen.CheckDecided(newModel(), schedule.Events);
            }

            Func<string, string> check = scenario(schedule, seen, model);
            return () =>
            {
                model.Replay(schedule.Events);
                return check(seen.Check(model.Outcomes));
            };
        });
}
