using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using CsCheck;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Histories;

/// <summary>How a generated wait waits.</summary>
internal enum WaitForm
{
    /// <summary><see cref="TimeSpan.Zero"/>: served now or <see cref="TimeoutException"/> now.</summary>
    Zero,

    /// <summary>No timeout, no token.</summary>
    Forever,

    /// <summary>Its own <see cref="CancellationTokenSource"/>, which a <c>Cancel</c> step may cancel.</summary>
    Cancellable,

    /// <summary>A finite timeout whose timer fires only when an <c>Expire</c> step says so.</summary>
    Timed,

    /// <summary>Both a token and a timer.</summary>
    CancellableTimed,
}

/// <summary>
/// One operation of a generated history. Outcomes are recorded per step (by identity), so the actual run and every
/// candidate sequential order of the model can be compared operation by operation.
/// </summary>
internal sealed class Step
{
    private static int s_next;

    /// <summary>Steps generated so far for the sample being generated (generation is sequential on one thread):
    /// the targets a later <c>Cancel</c> or <c>Expire</c> step of the same sample may pick.</summary>
    [ThreadStatic]
    private static List<Step>? t_generated;

    private Step(WaitForm? form)
    {
        Id = Interlocked.Increment(ref s_next);
        Form = form;
    }

    public int Id { get; }

    /// <summary>How the step waits, or null for an operation that never waits.</summary>
    public WaitForm? Form { get; }

    public bool Cancellable => Form is WaitForm.Cancellable or WaitForm.CancellableTimed;

    public bool Timed => Form is WaitForm.Timed or WaitForm.CancellableTimed;

    /// <summary>
    /// Whether the last actual run of this wait saw its token cancelled on arrival: the token was cancelled before
    /// the call was made, or the call returned already cancelled. A cancellation that races with a call's arrival may
    /// or may not be seen by it (the engine reads the token as the call starts and again as it joins the line, not
    /// atomically with a fast-path acquire), so the model follows the run there; a cancellation that completed before
    /// the call was made must be seen.
    /// </summary>
    public bool SawCancelOnArrival { get; set; }

    /// <summary>A step that does not wait.</summary>
    public static Gen<Step> Plain { get; } = Gen.Int[0, 0].Select(_ => New(null));

    /// <summary>A wait in one of the five forms.</summary>
    public static Gen<Step> Wait { get; } = Gen.Int[0, 4].Select(i => New((WaitForm)i));

    /// <summary>A wait that is served now or fails now (no timer, no token): for operations that must not block.</summary>
    public static Gen<Step> Now { get; } = Gen.Int[0, 0].Select(_ => New(WaitForm.Zero));

    /// <summary>An earlier cancellable wait of the same history (null if there is none yet).</summary>
    public static Gen<Step?> CancelTarget { get; } = Gen.Int[0, 15].Select(i => Pick(i, s => s.Cancellable));

    /// <summary>An earlier timed wait of the same history (null if there is none yet).</summary>
    public static Gen<Step?> ExpireTarget { get; } = Gen.Int[0, 15].Select(i => Pick(i, s => s.Timed));

    /// <summary>Starts a new history's generation (called by the initial-state generator, which runs first).</summary>
    public static void BeginHistory() => (t_generated ??= []).Clear();

    public override string ToString() => Form is { } form
        ? string.Create(CultureInfo.InvariantCulture, $"#{Id}:{form}")
        : string.Create(CultureInfo.InvariantCulture, $"#{Id}");

    private static Step New(WaitForm? form)
    {
        var step = new Step(form);
        (t_generated ??= []).Add(step);
        return step;
    }

    private static Step? Pick(int i, Func<Step, bool> eligible)
    {
        List<Step> candidates = (t_generated ?? []).Where(eligible).ToList();
        return candidates.Count == 0 ? null : candidates[i % candidates.Count];
    }
}

/// <summary>
/// The clock of a history: a wait's timer fires when an <c>Expire</c> step names that wait, and not otherwise. An
/// expiry that comes before the wait armed its timer is remembered, and the timer then fires as it is armed, as a real
/// timer whose due time has passed would. So "the timeout fires" is one atomic step that races with grants,
/// cancellations and other expiries, and the model knows exactly which wait it hit.
/// </summary>
/// <remarks>
/// The engine links a wait into its line before it arms the wait's timer (it never calls the clock under its lock), so
/// a grant may reach a wait that is linked and not yet armed: the grant wins, as it does against a real timer, which
/// starts counting only when armed. Two rules keep an expiry one atomic step all the same. An <c>Expire</c> that finds
/// the wait being started waits until its call has returned, by which time the timer was armed and fired. And a wait
/// whose expiry came before it started is started alone (<see cref="ActualHistory"/>'s arrival lock), so nothing can
/// grant it between its linking and its timer firing: it times out on arrival, as the model says.
/// </remarks>
internal sealed class ScriptedTime : TimeProvider
{
    /// <summary>The step whose wait is being started on this thread (timers are armed synchronously inside the call).</summary>
    [ThreadStatic]
    private static Step? t_starting;

    private readonly object _gate = new();
    private readonly Dictionary<Step, ScriptedTimer> _armed = [];
    private readonly HashSet<Step> _expired = [];

    /// <summary>The waits whose call is running (between <see cref="BeginStarting"/> and <see cref="Starting"/>'s end).</summary>
    private readonly HashSet<Step> _starting = [];

    /// <summary>Records that <paramref name="step"/>'s wait is about to start; returns whether its expiry came already
    /// (it must then be started alone). Follow with <see cref="Starting"/>.</summary>
    public bool BeginStarting(Step step)
    {
        lock (_gate)
        {
            _starting.Add(step);
            return _expired.Contains(step);
        }
    }

    /// <summary>Runs <paramref name="start"/> (a call that may arm a timer) on behalf of <paramref name="step"/>, announced
    /// by <see cref="BeginStarting"/>; an <see cref="Expire"/> of the step waits for it.</summary>
    public T Starting<T>(Step step, Func<T> start)
    {
        t_starting = step;
        try
        {
            return start();
        }
        finally
        {
            t_starting = null;
            lock (_gate)
            {
                _starting.Remove(step);
                Monitor.PulseAll(_gate);
            }
        }
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        Step step = t_starting ?? throw new InvalidOperationException("A timer was armed outside a scripted wait.");
        var timer = new ScriptedTimer(this, step, callback, state);
        lock (_gate)
        {
            if (_expired.Contains(step))
            {
                timer.Fire();
            }
            else
            {
                _armed[step] = timer;
            }
        }

        return timer;
    }

    /// <summary>Fires the timer of <paramref name="step"/>'s wait now, or as soon as it is armed. The callback runs
    /// under this clock's lock, so an expiry has taken effect when <see cref="Expire"/> returns, also when another
    /// expiry of the same wait was in progress (the engine never holds its own locks when it calls the clock).</summary>
    public void Expire(Step step)
    {
        lock (_gate)
        {
            _expired.Add(step);
            if (_armed.Remove(step, out ScriptedTimer? timer))
            {
                timer.Fire();
                return;
            }

            // Being started: it arms its timer (which then fires at once) before its call returns. Waits never block,
            // so this wait ends.
            while (_starting.Contains(step))
            {
                Monitor.Wait(_gate);
            }
        }
    }

    private void Disarm(ScriptedTimer timer)
    {
        lock (_gate)
        {
            if (_armed.TryGetValue(timer.Step, out ScriptedTimer? armed) && ReferenceEquals(armed, timer))
            {
                _armed.Remove(timer.Step);
            }
        }
    }

    private sealed class ScriptedTimer(ScriptedTime owner, Step step, TimerCallback callback, object? state) : ITimer
    {
        public Step Step => step;

        public void Fire() => callback(state);

        public bool Change(TimeSpan dueTime, TimeSpan period) => throw new NotSupportedException("The engine never reschedules a wait's timer.");

        public void Dispose() => owner.Disarm(this);

        public ValueTask DisposeAsync()
        {
            owner.Disarm(this);
            return default;
        }
    }
}

/// <summary>How an outcome is written, the same way for the actual run and for the model.</summary>
internal static class Outcome
{
    public const string Ok = "ok";
    public const string Pending = "pending";
    public const string Canceled = "canceled";
    public const string TimedOut = "timeout";

    public static string Of(Exception error) => error switch
    {
        OperationCanceledException => Canceled,
        TimeoutException => TimedOut,
        AsyncPrimitives.QueueShutDownException => "shutdown",
        SynchronizationLockException => "unheld",
        SemaphoreFullException => "full",
        InvalidOperationException => "invalid",
        _ => error.GetType().Name,
    };

    /// <summary>The observation both sides are compared by: the object's state, then every step's outcome by id.</summary>
    public static string Format(IEnumerable<KeyValuePair<Step, string>> outcomes, string state)
    {
        var text = new StringBuilder(state);
        foreach ((Step step, string outcome) in outcomes.OrderBy(o => o.Key.Id))
        {
            text.Append(CultureInfo.InvariantCulture, $" {step}={outcome}");
        }

        return text.ToString();
    }
}

/// <summary>
/// The real object under test and what each step observed. Waits are started and never awaited: a wait that was
/// decided has its outcome published by the deciding call before that call returns (continuations are only
/// scheduled), so once every step has returned, each wait's outcome is final or it is still waiting.
/// </summary>
internal abstract class ActualHistory
{
    private readonly ConcurrentDictionary<Step, CancellationTokenSource> _sources = new();
    private readonly object _cancelling = new();

    /// <summary>Every step that acts on the object holds it shared; a wait whose expiry came before it started holds it
    /// alone (see <see cref="ScriptedTime"/>).</summary>
    private readonly ReaderWriterLockSlim _arrivals = new(LockRecursionPolicy.NoRecursion);
    private readonly ConcurrentDictionary<Step, Func<string>> _outcomes = new();
    private readonly Lazy<string> _observed;

    protected ActualHistory() => _observed = new Lazy<string>(Observe, LazyThreadSafetyMode.ExecutionAndPublication);

    public ScriptedTime Time { get; } = new();

    /// <summary>What the run observed (computed once: reading an outcome consumes the wait's result).</summary>
    public string Observed => _observed.Value;

    public void Cancel(Step? target)
    {
        if (target is not null)
        {
            // One at a time: a second Cancel of a source whose callbacks are still running returns at once, before
            // the wait has left its line, which would make "cancelled" two steps. The engine's callbacks never take
            // this lock, so holding it while they run cannot deadlock.
            lock (_cancelling)
            {
                Shared(() => Source(target).Cancel());
            }
        }
    }

    public void Expire(Step? target)
    {
        if (target is not null)
        {
            Time.Expire(target);
        }
    }

    /// <summary>Starts <paramref name="step"/>'s wait with its timeout and token, and records its outcome (read later).</summary>
    public ValueTask<T> Wait<T>(Step step, Func<TimeSpan, CancellationToken, ValueTask<T>> wait, Func<T, string>? describe = null)
    {
        bool cancelledBefore = step.Cancellable && Source(step).IsCancellationRequested;
        ValueTask<T> task = Start(step, () => wait(Timeout(step), Token(step)));
        step.SawCancelOnArrival = cancelledBefore || task.IsCanceled;
        _outcomes[step] = () => Read(task, describe ?? (_ => Outcome.Ok));
        return task;
    }

    /// <inheritdoc cref="Wait{T}(Step, Func{TimeSpan, CancellationToken, ValueTask{T}}, Func{T, string}?)"/>
    public ValueTask Wait(Step step, Func<TimeSpan, CancellationToken, ValueTask> wait)
    {
        bool cancelledBefore = step.Cancellable && Source(step).IsCancellationRequested;
        ValueTask task = Start(step, () => wait(Timeout(step), Token(step)));
        step.SawCancelOnArrival = cancelledBefore || task.IsCanceled;
        _outcomes[step] = () => Read(task);
        return task;
    }

    /// <summary>Runs a call that does not wait and records what it returned or threw.</summary>
    public void Call(Step step, Func<string> call)
    {
        string outcome;
        try
        {
            outcome = Shared(call);
        }
        catch (Exception error) when (error is not OutOfMemoryException)
        {
            outcome = Outcome.Of(error);
        }

        _outcomes[step] = () => outcome;
    }

    /// <summary>Starts a wait under the arrival lock: shared, or alone when its expiry came before it started.</summary>
    private TTask Start<TTask>(Step step, Func<TTask> start)
    {
        bool alone = Time.BeginStarting(step);
        if (alone)
        {
            _arrivals.EnterWriteLock();
        }
        else
        {
            _arrivals.EnterReadLock();
        }

        try
        {
            return Time.Starting(step, start);
        }
        finally
        {
            if (alone)
            {
                _arrivals.ExitWriteLock();
            }
            else
            {
                _arrivals.ExitReadLock();
            }
        }
    }

    private T Shared<T>(Func<T> action)
    {
        _arrivals.EnterReadLock();
        try
        {
            return action();
        }
        finally
        {
            _arrivals.ExitReadLock();
        }
    }

    private void Shared(Action action) => Shared(() =>
    {
        action();
        return 0;
    });

    /// <summary>The object's observable state, read once after every step returned and every outcome was read.</summary>
    protected abstract string State();

    private static string Read<T>(ValueTask<T> task, Func<T, string> describe)
    {
        if (!task.IsCompleted)
        {
            return Outcome.Pending;
        }

        try
        {
            return describe(task.GetAwaiter().GetResult());
        }
        catch (Exception error) when (error is not OutOfMemoryException)
        {
            return Outcome.Of(error);
        }
    }

    private static string Read(ValueTask task)
    {
        if (!task.IsCompleted)
        {
            return Outcome.Pending;
        }

        try
        {
            task.GetAwaiter().GetResult();
            return Outcome.Ok;
        }
        catch (Exception error) when (error is not OutOfMemoryException)
        {
            return Outcome.Of(error);
        }
    }

    private static TimeSpan Timeout(Step step) => step.Form switch
    {
        WaitForm.Zero => TimeSpan.Zero,
        WaitForm.Timed or WaitForm.CancellableTimed => TimeSpan.FromHours(1), // fires only when an Expire step says so
        _ => System.Threading.Timeout.InfiniteTimeSpan,
    };

    private CancellationToken Token(Step step) => step.Cancellable ? Source(step).Token : CancellationToken.None;

    private CancellationTokenSource Source(Step step) => _sources.GetOrAdd(step, static _ => new CancellationTokenSource());

    private string Observe()
    {
        var outcomes = _outcomes.ToDictionary(o => o.Key, o => o.Value());
        return Outcome.Format(outcomes, State());
    }
}

/// <summary>
/// The sequential model of an object: single-threaded, every operation atomic. Subclasses hold the state and the
/// FIFO lines; this base holds the outcomes and the cancel/expire rules shared by every wait.
/// </summary>
internal abstract class ModelHistory
{
    private readonly Dictionary<Step, string> _outcomes = [];
    private readonly HashSet<Step> _cancelled = [];
    private readonly HashSet<Step> _expired = [];

    public string Observed => Outcome.Format(_outcomes, State());

    public void Record(Step step, string outcome) => _outcomes[step] = outcome;

    /// <summary>A cancelled token fails a wait at once, even one that could be served (the arrival check), when the
    /// run saw it on arrival (see <see cref="Step.SawCancelOnArrival"/>); otherwise the cancellation raced with the
    /// arrival and the wait proceeds as if it came first.</summary>
    public bool CancelledOnArrival(Step step)
    {
        if (step.Cancellable && _cancelled.Contains(step) && step.SawCancelOnArrival)
        {
            Record(step, Outcome.Canceled);
            return true;
        }

        return false;
    }

    /// <summary>The rest of the acquire sequence for a wait that could not be served now: a zero timeout fails it,
    /// else it joins its line (<paramref name="enqueue"/>) and a timer that already expired fires at once.</summary>
    public void WaitOrFail(Step step, Action enqueue)
    {
        if (step.Form == WaitForm.Zero)
        {
            Record(step, Outcome.TimedOut);
            return;
        }

        enqueue();
        Record(step, Outcome.Pending);
        if (ExpiredBefore(step))
        {
            Leave(step, Outcome.TimedOut);
        }
    }

    /// <summary>Whether an <c>Expire</c> step named <paramref name="step"/> already (its timer fires as it is armed).</summary>
    public bool ExpiredBefore(Step step) => step.Timed && _expired.Contains(step);

    public void Cancel(Step? target)
    {
        if (target is not null && _cancelled.Add(target))
        {
            Leave(target, Outcome.Canceled);
        }
    }

    public void Expire(Step? target)
    {
        if (target is not null && _expired.Add(target))
        {
            Leave(target, Outcome.TimedOut);
        }
    }

    /// <summary>If <paramref name="step"/> waits in a line, it leaves it with <paramref name="outcome"/> (and the
    /// object reacts to the departure); otherwise nothing happens.</summary>
    protected abstract void Leave(Step step, string outcome);

    protected abstract string State();
}

/// <summary>
/// The history checks run alone, one at a time, after the other tests: CsCheck's <c>SampleParallel</c> holds pool threads
/// while it runs its parallel steps, and two checks at once on a 2-core machine starved the thread pool for tens of
/// seconds, long enough for an asynchronous test running beside them to hit its time bound.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HistoriesCollection
{
    public const string Name = "Histories (alone: they hold pool threads)";
}

/// <summary>Runs a history check: a fixed set of seeds in CI, or a long random run.</summary>
/// <remarks>
/// <para>Each seed generates one history (up to 8 sequential steps, then up to 6 steps on two threads) and runs it
/// <see cref="Replays"/> times on fresh objects; every run must be explained by some order of its parallel steps that
/// keeps each thread's own order (CsCheck's <c>SampleParallel</c>). In CI: <see cref="Seeds"/> seeds (PCG streams
/// 0, 1, 2...), so the generated histories are the same on every run; the thread interleavings are not.</para>
/// <para><c>ASYNCTOOLS_HISTORY_ITER=N</c> runs N random histories per check instead (with shrinking to a minimal
/// failing history). <c>ASYNCTOOLS_HISTORY_SEED=&lt;seed&gt;</c> replays one seed, as printed by a failure.</para>
/// </remarks>
internal static class History
{
    public const int Seeds = 1000;
    public const int Replays = 1;

    /// <summary>How many times <c>ASYNCTOOLS_HISTORY_SEED</c> runs its history.</summary>
    public const int SeedReplays = 1000;

    private static readonly long? s_iterations = long.TryParse(Environment.GetEnvironmentVariable("ASYNCTOOLS_HISTORY_ITER"), NumberStyles.Integer, CultureInfo.InvariantCulture, out long n) && n > 0 ? n : null;
    private static readonly string? s_seed = Environment.GetEnvironmentVariable("ASYNCTOOLS_HISTORY_SEED") is { Length: > 0 } s ? s : null;

    /// <summary>Checks every history generated from <paramref name="operations"/> against the model.</summary>
    /// <returns>How many runs were checked.</returns>
    public static long Check<TActual, TModel>(ITestOutputHelper output, string name, Func<(TActual, TModel)> create, params GenOperation<TActual, TModel>[] operations)
        where TActual : ActualHistory
        where TModel : ModelHistory
    {
        Gen<(TActual, TModel)> initial = Gen.Const(() =>
        {
            Step.BeginHistory();
            return create();
        });

        void Run(string? seed, long iter, int replay) =>
            initial.SampleParallel(
                operations,
                equal: static (actual, model) => actual.Observed == model.Observed,
                seed: seed,
                maxSequentialOperations: 8,
                maxParallelOperations: 6,
                iter: iter,
                threads: 2,
                printActual: static actual => actual.Observed,
                printModel: static model => model.Observed,
                replay: replay);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        long runs;
        if (s_seed is not null)
        {
            Run(s_seed, 1, SeedReplays); // a failure may need a particular interleaving: try it many times
            runs = SeedReplays;
        }
        else if (s_iterations is { } iterations)
        {
            Run(null, iterations, 1);
            runs = iterations;
        }
        else
        {
            for (int i = 0; i < Seeds; i++)
            {
                string seed = new PCG((uint)i, (ulong)i * 0x9E3779B97F4A7C15UL).ToString();
                try
                {
                    Run(seed, 1, Replays);
                }
                catch (Exception error) when (error is not Xunit.Sdk.XunitException)
                {
                    throw new Xunit.Sdk.XunitException($"{name}: the history of seed {seed} is not linearizable (replay it with ASYNCTOOLS_HISTORY_SEED={seed}):{Environment.NewLine}{error.Message}");
                }
            }

            runs = (long)Seeds * Replays;
        }

        output.WriteLine($"{name}: {runs:N0} runs checked against the model in {clock.Elapsed.TotalSeconds:F1} s");
        return runs;
    }
}
