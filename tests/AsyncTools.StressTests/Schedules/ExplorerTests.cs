using Xunit.Abstractions;

namespace AsyncTools.StressTests.Schedules;

/// <summary>The explorer itself: it runs every interleaving of independent strands exactly once, so the schedule
/// counts of the engine's scenarios mean what they say.</summary>
public sealed class ExplorerTests(ITestOutputHelper output) : ScheduleTestBase(output)
{
    [Fact]
    public void Explore_IndependentStrands_RunsEveryInterleavingOnce()
    {
        // Strands of 2, 3 and 2 segments (1, 2 and 1 hook points): 7! / (2! 3! 2!) = 210 interleavings.
        Exploration result = Explore("independent strands", schedule =>
        {
            var order = new List<string>();
            schedule.Spawn("a", () => Segments(schedule, order, "a", 2));
            schedule.Spawn("b", () => Segments(schedule, order, "b", 3));
            schedule.Spawn("c", () => Segments(schedule, order, "c", 2));
            return () => string.Concat(order);
        });

        result.Schedules.Should().Be(210);
        result.Outcomes.Should().HaveCount(210, "each interleaving is run once").And.OnlyContain(o => o.Value == 1);
    }

    [Fact]
    public void Explore_PostedContinuationsAndTimers_AreStrandsOfTheirOwn()
    {
        // A strand that posts a continuation and then creates a timer (a hook point): 2 segments; the continuation
        // and the timer's firing are strands of 1 segment each, runnable once posted and created. Beside it, an
        // independent strand x of 1 segment. Either x runs first, then p1, then the 3 others in any order (3! = 6), or
        // p1 runs first and then the 4 others in any order (4! = 24): 30 schedules.
        Exploration result = Explore("posts and timers", schedule =>
        {
            var order = new List<string>();
            schedule.Spawn("poster", () =>
            {
                order.Add("p1");
                schedule.Context.Post(_ => order.Add("r"), null);
                schedule.Time.Arming = "w";
                _ = schedule.Time.CreateTimer(_ => order.Add("t"), null, TimeSpan.FromHours(1), Timeout.InfiniteTimeSpan);
                order.Add("p2");
            });
            schedule.Spawn("x", () => order.Add("x"));
            return () => string.Join(" ", order);
        });

        result.Schedules.Should().Be(30);
        result.Outcomes.Should().HaveCount(30, "each interleaving is run once");
    }

    private static void Segments(Schedule schedule, List<string> order, string name, int segments)
    {
        for (int i = 0; i < segments; i++)
        {
            if (i > 0)
            {
                schedule.Yield();
            }

            order.Add(name);
        }
    }
}
