using System.Globalization;
using AsyncPrimitives;
using AsyncTools.StressTests.Histories;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Schedules;

/// <summary>
/// Every schedule of a small <see cref="AsyncQueue{T}"/> scenario: a cancellable getter, a timed getter, a putter whose second put
/// waits with a timeout on the full queue, a canceller, the timer and the continuations. After each schedule: every
/// wait's outcome (a getter's: the item it got) is the sequential model's for the order in which the steps took effect,
/// and every item that was put is got or left in the queue exactly once, in FIFO order; a timed-out put left nothing.
/// And after every step, the waits the model has decided by then are exactly those whose outcome was delivered.
/// </summary>
public sealed class QueueScheduleTests(ITestOutputHelper output) : ScheduleTestBase(output)
{
    [Fact]
    public void AsyncQueue_CancelledGetterAndTimedPutter_EveryScheduleMatchesTheModel()
    {
        Exploration result = Explore("AsyncQueue(maxSize 1)", () => new QueueModel(1) { Tokens = { ["g"] = "c1" } }, (schedule, seen, model) =>
        {
            var queue = new AsyncQueue<int>(1, schedule.Time);
            var token = new CancellationTokenSource();
            var got = new List<int>();

            schedule.Spawn("getter g", () => seen.Track("getter g", () => Getter("g", Timeout.InfiniteTimeSpan, token.Token)));
            schedule.Spawn("getter h", () => seen.Track("getter h", () => Getter("h", TimeSpan.FromHours(1), CancellationToken.None)));
            schedule.Spawn("putter", () => seen.Track("putter", Putter));
            schedule.Spawn("canceller", () =>
            {
                schedule.Event("cancel c1");
                token.Cancel();
            });

            return outcome =>
            {
                queue.Lines.Waiting.Should().Be(0);
                var left = new List<int>();
                while (queue.TryGet(out int item))
                {
                    left.Add(item);
                }

                left.Should().Equal(model.Items, "what is left, in FIFO order");
                var put = model.Outcomes.Where(o => o.Key.StartsWith('p') && o.Value == Outcome.Ok).Select(o => o.Key == "p1" ? 1 : 2);
                got.Concat(left).Should().BeEquivalentTo(put, "every item put is got or left exactly once, and nothing else");
                return outcome;
            };

            async Task Getter(string name, TimeSpan timeout, CancellationToken cancellationToken)
            {
                schedule.Time.Arming = name;
                schedule.Event("get " + name);
                ValueTask<int> wait = queue.GetAsync(timeout, cancellationToken);
                seen.Started(name, wait);
                string outcome;
                try
                {
                    int item = await wait;
                    got.Add(item);
                    outcome = item.ToString(CultureInfo.InvariantCulture);
                }
                catch (Exception error) when (error is OperationCanceledException or TimeoutException)
                {
                    outcome = Outcome.Of(error);
                }

                seen.Record(name, outcome);
            }

            async Task Putter()
            {
                await Put("p1", 1, Timeout.InfiniteTimeSpan);
                await Put("p2", 2, TimeSpan.FromHours(1)); // its timer fires only as a strand of the schedule
            }

            async Task Put(string name, int item, TimeSpan timeout)
            {
                schedule.Time.Arming = name;
                schedule.Event($"put {name}:{item}");
                ValueTask wait = queue.PutAsync(item, timeout);
                seen.Started(name, wait);
                string outcome = Outcome.Ok;
                try
                {
                    await wait;
                }
                catch (TimeoutException error)
                {
                    outcome = Outcome.Of(error);
                }

                seen.Record(name, outcome);
            }
        });

        result.Outcomes.Keys.Should().Contain(["g=1 h=2 p1=ok p2=ok", "g=2 h=1 p1=ok p2=ok", "g=canceled h=1 p1=ok p2=ok", "g=canceled h=timeout p1=ok p2=timeout"]);
        result.Schedules.Should().Be(2_533, "the exhaustive count on this engine");
    }
}
