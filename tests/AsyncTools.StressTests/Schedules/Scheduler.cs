using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace AsyncTools.StressTests.Schedules;

/// <summary>
/// A controlled scheduler for the wait engine: it runs a scenario's logical threads ("strands") as real threads that
/// pass one baton, so exactly one runs at a time, and it alone decides which runs next. A strand gives the baton back
/// when it ends or at a hook point the engine already offers: a waiter's timer being created (inside the acquire
/// call, after the waiter joined its line: <see cref="ScheduleTime"/>), and a continuation being posted (the awaiter's
/// resumption becomes a strand of its own: <see cref="ScheduleContext"/>). A timer fires only as a strand of its own,
/// and a cancellation is a strand that calls <see cref="CancellationTokenSource.Cancel()"/> (its callbacks run inside
/// it). Every point where more than one strand could run is a choice; <see cref="Explorer"/> enumerates them all.
/// </summary>
internal sealed class Schedule
{
    /// <summary>How long the scheduler waits for a strand to give the baton back before it calls the schedule hung
    /// (a strand blocked on something another strand holds: the engine never gives up a real lock at a hook point).</summary>
    private static readonly TimeSpan s_hang = TimeSpan.FromSeconds(30);

    private readonly Func<int, int> _choose;
    private readonly List<Strand> _enabled = [];
    private readonly SemaphoreSlim _back = new(0);
    private readonly List<string> _trace = [];
    private readonly List<string> _events = [];
    private Strand? _running;
    private int _spawned;

    /// <param name="choose">Picks one of n runnable strands (called only when n &gt; 1).</param>
    public Schedule(Func<int, int> choose)
    {
        _choose = choose;
        Context = new ScheduleContext(this);
        Time = new ScheduleTime(this);
    }

    /// <summary>Where the strands' awaits post their continuations.</summary>
    public ScheduleContext Context { get; }

    /// <summary>The clock to give the primitive: timers yield as they are created and fire only as strands.</summary>
    public ScheduleTime Time { get; }

    /// <summary>Called between two segments (no strand runs then), and once more at the end: a check of the state after
    /// every step.</summary>
    public Action? BetweenSteps { get; set; }

    /// <summary>The scenario's steps in the order they took effect (see <see cref="Event"/>).</summary>
    public IReadOnlyList<string> Events => _events;

    /// <summary>The strands in the order they held the baton, one entry per run segment.</summary>
    public string Trace => string.Join(" → ", _trace);

    /// <summary>Records a step the model replays (a call about to be made, a cancellation, a timer firing). Only the
    /// running strand calls it, and it is called right before the step's call with no hook point in between, so the
    /// order of events is the order in which the steps took effect.</summary>
    public void Event(string step) => _events.Add(step);

    /// <summary>Makes <paramref name="body"/> a runnable strand. Called before <see cref="Run"/> or by the running strand.</summary>
    public Strand Spawn(string name, Action body)
    {
        var strand = new Strand(++_spawned, name, body);
        _enabled.Add(strand);
        return strand;
    }

    /// <summary>Removes a strand that has not started (a timer disposed before it fired).</summary>
    public void Withdraw(Strand strand)
    {
        if (!strand.Started)
        {
            _enabled.Remove(strand);
        }
    }

    /// <summary>A hook point: the running strand gives the baton back and waits until the scheduler picks it again.</summary>
    public void Yield()
    {
        Strand strand = _running ?? throw new InvalidOperationException("Only a strand yields.");
        _back.Release();
        strand.Go.Wait();
    }

    /// <summary>Runs strands until none is runnable. Throws the first strand's failure.</summary>
    public void Run()
    {
        while (_enabled.Count > 0)
        {
            int pick = _enabled.Count == 1 ? 0 : _choose(_enabled.Count);
            Strand strand = _enabled[pick];
            _running = strand;
            _trace.Add(strand.Segments++ == 0 ? strand.Name : strand.Name + "'");
            if (strand.Started)
            {
                strand.Go.Release();
            }
            else
            {
                strand.Started = true;
                Workers.Run(() => RunStrand(strand), () => _back.Release());
            }

            if (!_back.Wait(s_hang))
            {
                throw new InvalidOperationException($"Strand '{strand.Name}' did not give the baton back within {s_hang.TotalSeconds} s (blocked).");
            }

            _running = null;
            if (strand.Done)
            {
                _enabled.Remove(strand);
                if (strand.Error is { } error)
                {
                    throw new InvalidOperationException($"Strand '{strand.Name}' failed: {error.Message}", error);
                }
            }

            BetweenSteps?.Invoke();
        }
    }

    private void RunStrand(Strand strand)
    {
        SynchronizationContext.SetSynchronizationContext(Context);
        try
        {
            strand.Body();
        }
        catch (Exception error) when (error is not OutOfMemoryException)
        {
            strand.Error = error;
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(null);
            strand.Done = true;
        }
    }

    /// <summary>A logical thread of a schedule.</summary>
    internal sealed class Strand(int id, string name, Action body)
    {
        public int Id { get; } = id;

        public string Name { get; } = name;

        public Action Body { get; } = body;

        /// <summary>Released by the scheduler to resume the strand after a <see cref="Yield"/>.</summary>
        public SemaphoreSlim Go { get; } = new(0);

        public bool Started { get; set; }

        public bool Done { get; set; }

        public int Segments { get; set; }

        public Exception? Error { get; set; }
    }

    /// <summary>Real threads for strands, kept for reuse: a schedule starts a handful, and thousands of schedules run.</summary>
    private static class Workers
    {
        private static readonly Stack<Worker> s_idle = new();

        /// <summary>Runs <paramref name="work"/> on an idle worker (or a new one), then <paramref name="done"/> once the
        /// worker is idle again (so the next strand can have it).</summary>
        public static void Run(Action work, Action done)
        {
            Worker? worker;
            lock (s_idle)
            {
                s_idle.TryPop(out worker);
            }

            (worker ?? new Worker()).Start(work, done);
        }

        private sealed class Worker
        {
            private readonly SemaphoreSlim _ready = new(0);
            private Action? _work;
            private Action? _done;

            public Worker()
            {
                var thread = new Thread(Loop) { IsBackground = true, Name = "schedule strand" };
                thread.Start();
            }

            public void Start(Action work, Action done)
            {
                _work = work;
                _done = done;
                _ready.Release();
            }

            private void Loop()
            {
                while (true)
                {
                    _ready.Wait();
                    Action work = _work!;
                    Action done = _done!;
                    _work = _done = null;
                    work();
                    lock (s_idle)
                    {
                        s_idle.Push(this);
                    }

                    done();
                }
            }
        }
    }
}

/// <summary>Turns every continuation an awaiter posts into a new strand, so "the awaiter resumes" (reads its outcome,
/// recycles its node, acts on it) is a step that races with everything else.</summary>
internal sealed class ScheduleContext(Schedule schedule) : SynchronizationContext
{
    public override void Post(SendOrPostCallback d, object? state) => schedule.Spawn("resume", () => d(state));

    public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException("The engine never sends to a context.");

    public override SynchronizationContext CreateCopy() => this;
}

/// <summary>
/// A clock whose <see cref="CreateTimer"/> is a hook point: the creating strand (inside the acquire call, after its
/// waiter joined the line and before the timer is armed) yields, and the timer's callback becomes a strand of its own,
/// which may run at any later point unless the timer is disposed first. The scenario names the wait it is about to
/// start (<see cref="Arming"/>), and the timer strand records <c>expire &lt;name&gt;</c> as it fires.
/// </summary>
internal sealed class ScheduleTime(Schedule schedule) : TimeProvider
{
    /// <summary>The name of the wait the running strand is about to start.</summary>
    public string? Arming { get; set; }

    /// <summary>Timers created so far.</summary>
    public int Created { get; private set; }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        string name = Arming ?? throw new InvalidOperationException("A timer was created outside a named wait.");
        Created++;
        var timer = new ScheduledTimer(schedule);
        timer.Fire = schedule.Spawn("timer " + name, () =>
        {
            schedule.Event("expire " + name);
            callback(state);
        });
        schedule.Yield();
        return timer;
    }

    private sealed class ScheduledTimer(Schedule schedule) : ITimer
    {
        public Schedule.Strand? Fire { get; set; }

        public bool Change(TimeSpan dueTime, TimeSpan period) => throw new NotSupportedException("The engine never reschedules a wait's timer.");

        public void Dispose() => schedule.Withdraw(Fire!);

        public ValueTask DisposeAsync()
        {
            Dispose();
            return default;
        }
    }
}

/// <summary>What an exploration did: schedules run, distinct outcomes seen, time taken.</summary>
internal sealed record Exploration(string Name, long Schedules, int MaxChoices, IReadOnlyDictionary<string, int> Outcomes, TimeSpan Elapsed)
{
    public override string ToString()
    {
        var text = new StringBuilder(string.Create(CultureInfo.InvariantCulture,
            $"{Name}: {Schedules:N0} schedules explored (exhaustive, up to {MaxChoices} choices deep) in {Elapsed.TotalSeconds:F1} s; outcomes:"));
        foreach ((string outcome, int count) in Outcomes.OrderBy(o => o.Key, StringComparer.Ordinal))
        {
            text.Append(CultureInfo.InvariantCulture, $"{Environment.NewLine}  {outcome}: {count:N0}");
        }

        return text.ToString();
    }
}

/// <summary>
/// Systematic exploration: runs a scenario once per schedule, depth first over its choice points. The first run takes
/// the first runnable strand at every choice; each next run replays the previous run's choices up to its last choice
/// point that has an untried option, takes that option, and goes on with first choices. It ends when every option of
/// every choice point has been tried: every interleaving of the scenario's strands at its hook points, each once.
/// </summary>
internal static class Explorer
{
    /// <summary>Explores every schedule of <paramref name="scenario"/>.</summary>
    /// <param name="name">For messages.</param>
    /// <param name="scenario">Sets up a fresh object and spawns its strands on the schedule, and returns the check to
    /// run once no strand is runnable, which returns a short description of the outcome (to count distinct outcomes)
    /// and throws if an invariant does not hold.</param>
    /// <param name="limit">A bound on schedules, so a scenario that grew too large fails instead of running for hours.</param>
    public static Exploration Explore(string name, Func<Schedule, Func<string>> scenario, long limit = 100_000)
    {
        var clock = Stopwatch.StartNew();
        var choices = new List<(int Choice, int Options)>();
        var outcomes = new Dictionary<string, int>(StringComparer.Ordinal);
        long schedules = 0;
        int maxChoices = 0;
        while (true)
        {
            int depth = 0;
            var schedule = new Schedule(options =>
            {
                if (depth < choices.Count)
                {
                    (int choice, int recorded) = choices[depth++];
                    if (recorded != options)
                    {
                        throw new InvalidOperationException($"Choice point {depth} offered {options} strands where an earlier run offered {recorded}: the scenario is not deterministic.");
                    }

                    return choice;
                }

                choices.Add((0, options));
                depth++;
                return 0;
            });

            schedules++;
            string outcome;
            try
            {
                Func<string> check = scenario(schedule);
                schedule.Run();
                outcome = check();
            }
            catch (Exception error) when (error is not OutOfMemoryException)
            {
                throw new Xunit.Sdk.XunitException(
                    $"{name}: schedule {schedules:N0} breaks the contract: {error.Message}{Environment.NewLine}" +
                    $"  choices: [{string.Join(", ", choices.Take(depth).Select(c => c.Choice))}]{Environment.NewLine}" +
                    $"  strands: {schedule.Trace}{Environment.NewLine}" +
                    $"  events:  {string.Join(", ", schedule.Events)}{Environment.NewLine}{error}");
            }

            if (depth != choices.Count)
            {
                throw new Xunit.Sdk.XunitException($"{name}: schedule {schedules:N0} stopped after {depth} of {choices.Count} choices: the scenario is not deterministic.");
            }

            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
            maxChoices = Math.Max(maxChoices, choices.Count);
            while (choices.Count > 0 && choices[^1].Choice + 1 == choices[^1].Options)
            {
                choices.RemoveAt(choices.Count - 1);
            }

            if (choices.Count == 0)
            {
                return new Exploration(name, schedules, maxChoices, outcomes, clock.Elapsed);
            }

            if (schedules >= limit)
            {
                throw new Xunit.Sdk.XunitException($"{name}: more than {limit:N0} schedules; make the scenario smaller.");
            }

            choices[^1] = (choices[^1].Choice + 1, choices[^1].Options);
        }
    }
}
