using AsyncPrimitives;
using AsyncTools.StressTests.Histories;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Schedules;

/// <summary>
/// Every schedule of a small <see cref="AsyncReaderWriterLock"/> scenario: a read lock is held at the start; a writer
/// waits with a timeout; a reader arrives (and queues behind the waiting writer, or enters); the first reader lets go;
/// the timer and the continuations (each holder releases when it resumes). After each schedule: every outcome is the
/// sequential model's for the order in which the steps took effect (in particular a writer that timed out lets in the
/// reader it held back), readers and the writer never held at once, and the lock is free with nobody in line.
/// And after every step, the waits the model has decided by then are exactly those whose outcome was delivered.
/// </summary>
public sealed class ReaderWriterLockScheduleTests(ITestOutputHelper output) : ScheduleTestBase(output)
{
    [Fact]
    public void AsyncReaderWriterLock_WriterTimeoutLetsReadersIn_EveryScheduleMatchesTheModel()
    {
        Exploration result = Explore("AsyncReaderWriterLock", () => new ReaderWriterModel(readers: 1), (schedule, seen, model) =>
        {
            var rw = new AsyncReaderWriterLock(timeProvider: schedule.Time);
            rw.TryAcquireRead(out _).Should().BeTrue();
            int readers = 0, writers = 0;

            schedule.Spawn("writer", () => seen.Track("writer", () => Acquire("w", writer: true)));
            schedule.Spawn("reader", () => seen.Track("reader", () => Acquire("r", writer: false)));
            schedule.Spawn("first reader", () =>
            {
                schedule.Event("release read");
                rw.ReleaseRead();
            });

            return outcome =>
            {
                rw.CurrentReaderCount.Should().Be(0);
                rw.IsWriteLockHeld.Should().BeFalse();
                rw.Lines.Waiting.Should().Be(0);
                return outcome;
            };

            async Task Acquire(string name, bool writer)
            {
                schedule.Time.Arming = name;
                schedule.Event($"{(writer ? "write" : "read")} {name}");
                ValueTask<AsyncReaderWriterLock.Releaser> wait = writer ? rw.AcquireWriteAsync(TimeSpan.FromHours(1)) : rw.AcquireReadAsync();
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
                if (outcome != Outcome.Ok)
                {
                    return;
                }

                if (writer ? ++writers > 1 || readers > 0 : writers > 0)
                {
                    throw new InvalidOperationException($"{name} entered with {readers} other readers and {writers} writers.");
                }

                readers += writer ? 0 : 1;
                schedule.Event($"release {(writer ? "write" : "read")}");
                if (writer)
                {
                    writers--;
                    rw.ReleaseWrite();
                }
                else
                {
                    readers--;
                    rw.ReleaseRead();
                }
            }
        });

        result.Outcomes.Keys.Should().Contain(["r=ok w=ok", "r=ok w=timeout"]);
        result.Schedules.Should().Be(57, "the exhaustive count on this engine");
    }

    /// <summary>One FIFO line admitted from its head: a writer when nobody holds, a reader when no writer holds. A waiting
    /// writer holds back the readers behind it; when it leaves, they are let in.</summary>
    private sealed class ReaderWriterModel(int readers) : Model
    {
        private readonly List<(string Wait, bool Writer)> _line = [];
        private bool _writer;

        protected override void Apply(string verb, string argument)
        {
            switch (verb)
            {
                case "write" or "read":
                    _line.Add((argument, verb == "write"));
                    Outcomes[argument] = Outcome.Pending;
                    break;
                case "release" when argument == "write":
                    _writer = false;
                    break;
                case "release":
                    readers--;
                    break;
                default:
                    throw new InvalidOperationException($"Unknown step {verb}.");
            }

            Admit();
        }

        protected override void Leave(string wait, string outcome)
        {
            if (_line.RemoveAll(w => w.Wait == wait) > 0)
            {
                Outcomes[wait] = outcome;
                Admit();
            }
        }

        private void Admit()
        {
            while (_line.Count > 0 && !_writer && (!_line[0].Writer || readers == 0))
            {
                (string wait, bool writer) = _line[0];
                _line.RemoveAt(0);
                Outcomes[wait] = Outcome.Ok;
                if (writer)
                {
                    _writer = true;
                }
                else
                {
                    readers++;
                }
            }
        }
    }
}
