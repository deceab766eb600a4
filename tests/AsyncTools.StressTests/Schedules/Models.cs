using System.Globalization;
using AsyncTools.StressTests.Histories;

namespace AsyncTools.StressTests.Schedules;

/// <summary>What a schedule's waits observed, and the tasks of its strands (each must have run to its end).</summary>
internal sealed class Observations
{
    private readonly SortedDictionary<string, string> _outcomes = new(StringComparer.Ordinal);
    private readonly List<(string Name, Task Task)> _tasks = [];
    private readonly Dictionary<string, Func<bool>> _started = [];
    private int _holders;

    /// <summary>Keeps a started wait's task until its outcome is recorded, to tell after each step whether it was decided.</summary>
    public void Started(string wait, ValueTask task) => _started[wait] = () => task.IsCompleted;

    /// <inheritdoc cref="Started(string, ValueTask)"/>
    public void Started<T>(string wait, ValueTask<T> task) => _started[wait] = () => task.IsCompleted;

    /// <summary>Records what wait <paramref name="wait"/> observed; a wait observes once.</summary>
    public void Record(string wait, string outcome)
    {
        _started.Remove(wait); // read: its node may be serving another wait now
        if (!_outcomes.TryAdd(wait, outcome))
        {
            throw new InvalidOperationException($"Wait {wait} observed twice ({_outcomes[wait]}, then {outcome}).");
        }
    }

    /// <summary>Starts an async strand body and keeps its task, which must have completed when the schedule ends.</summary>
    public void Track(string name, Func<Task> body) => _tasks.Add((name, body()));

    /// <summary>Someone now holds what the scenario guards; throws if more than <paramref name="limit"/> do.</summary>
    public void Enter(int limit = 1)
    {
        if (++_holders > limit)
        {
            throw new InvalidOperationException($"{_holders} holders at once (at most {limit}).");
        }
    }

    /// <summary>A holder lets go.</summary>
    public void Exit() => _holders--;

    /// <summary>Every strand's task ran to completion, and the observed outcomes are exactly
    /// <paramref name="expected"/> (the model's, from the same order of steps).</summary>
    public string Check(IReadOnlyDictionary<string, string> expected)
    {
        foreach ((string name, Task task) in _tasks)
        {
            if (!task.IsCompleted)
            {
                throw new InvalidOperationException($"Strand {name} never resumed (its wait was never decided or its continuation never ran).");
            }

            task.GetAwaiter().GetResult(); // its own failure, if it failed
        }

        string observed = Format(_outcomes);
        string model = Format(expected);
        return observed == model
            ? observed
            : throw new InvalidOperationException($"observed {observed}, but the steps in this order give {model}.");
    }

    /// <summary>
    /// After a step: every wait the model has decided (given the steps so far) has its outcome delivered, and no other
    /// wait has (a wait is decided by the step that serves, cancels or times it out, not later). Waits whose call has
    /// not returned yet (paused in it) are skipped.
    /// </summary>
    public void CheckDecided(Model model, IEnumerable<string> events)
    {
        model.Replay(events);
        foreach ((string wait, string outcome) in model.Outcomes)
        {
            bool recorded = _outcomes.ContainsKey(wait);
            if (!recorded && !_started.ContainsKey(wait))
            {
                continue;
            }

            bool decided = recorded || _started[wait]();
            if (decided != (outcome != Outcome.Pending))
            {
                throw new InvalidOperationException($"after the steps {string.Join(", ", events)}, wait {wait} is {(decided ? "decided" : "still waiting")}, but the model has it {outcome}.");
            }
        }
    }

    private static string Format(IEnumerable<KeyValuePair<string, string>> outcomes) =>
        string.Join(" ", outcomes.OrderBy(o => o.Key, StringComparer.Ordinal).Select(o => $"{o.Key}={o.Value}"));
}

/// <summary>The base of the sequential models: replays a schedule's events (<c>verb argument</c>) in order.</summary>
internal abstract class Model
{
    private readonly HashSet<string> _cancelled = [];

    /// <summary>Each wait's outcome in the model; <see cref="Outcome.Pending"/> while it waits.</summary>
    public SortedDictionary<string, string> Outcomes { get; } = new(StringComparer.Ordinal);

    /// <summary>The one FIFO line of a model that has one, oldest first.</summary>
    protected List<string> Line { get; } = [];

    /// <summary>The token (a name) each wait was made with, if any.</summary>
    public Dictionary<string, string> Tokens { get; } = [];

    public void Replay(IEnumerable<string> events)
    {
        foreach (string step in events)
        {
            int space = step.IndexOf(' ', StringComparison.Ordinal);
            string verb = space < 0 ? step : step[..space];
            string argument = space < 0 ? "" : step[(space + 1)..];
            switch (verb)
            {
                case "cancel":
                    _cancelled.Add(argument);
                    foreach (string wait in Tokens.Where(t => t.Value == argument).Select(t => t.Key).ToList())
                    {
                        Leave(wait, Outcome.Canceled);
                    }

                    break;
                case "expire":
                    Leave(argument, Outcome.TimedOut);
                    break;
                default:
                    Apply(verb, argument);
                    break;
            }
        }
    }

    /// <summary>A wait made with a token that was cancelled before the call fails at once (the call's first check).</summary>
    protected bool CancelledOnArrival(string wait)
    {
        if (Tokens.TryGetValue(wait, out string? token) && _cancelled.Contains(token))
        {
            Outcomes[wait] = Outcome.Canceled;
            return true;
        }

        return false;
    }

    /// <summary>Any step other than a cancellation or a timer firing.</summary>
    protected abstract void Apply(string verb, string argument);

    /// <summary><paramref name="wait"/> joins the end of <see cref="Line"/> and waits.</summary>
    protected void Enqueue(string wait)
    {
        Line.Add(wait);
        Outcomes[wait] = Outcome.Pending;
    }

    /// <summary>The oldest wait in <see cref="Line"/>, if any, leaves it served; false if nobody waits.</summary>
    protected bool ServeOldest()
    {
        if (Line.Count == 0)
        {
            return false;
        }

        Outcomes[Line[0]] = Outcome.Ok;
        Line.RemoveAt(0);
        return true;
    }

    /// <summary>If <paramref name="wait"/> is in a line, it leaves it with <paramref name="outcome"/> (and the object
    /// reacts to the departure); otherwise nothing happens. By default the line is <see cref="Line"/>.</summary>
    protected virtual void Leave(string wait, string outcome)
    {
        if (Line.Remove(wait))
        {
            Outcomes[wait] = outcome;
        }
    }
}

/// <summary>A lock or semaphore: counted permits and one FIFO line. Steps: <c>arrive w</c>, <c>release</c>.</summary>
internal sealed class PermitModel(int permits) : Model
{
    public int Permits => permits;

    public int Waiting => Line.Count;

    protected override void Apply(string verb, string argument)
    {
        switch (verb)
        {
            case "arrive" when CancelledOnArrival(argument):
                break;
            case "arrive" when Line.Count == 0 && permits > 0:
                permits--;
                Outcomes[argument] = Outcome.Ok;
                break;
            case "arrive":
                Enqueue(argument);
                break;
            case "release":
                if (!ServeOldest())
                {
                    permits++; // nobody waits: the permit is free again (else the oldest waiter got it)
                }

                break;
            default:
                throw new InvalidOperationException($"Unknown step {verb}.");
        }
    }
}

/// <summary>A FIFO queue of at most <c>maxSize</c> items with lines of getters and putters. Steps: <c>put w:item</c>,
/// <c>get w</c>. A getter's outcome is the item it got.</summary>
internal sealed class QueueModel(int maxSize) : Model
{
    private readonly List<int> _items = [];
    private readonly List<string> _getters = [];
    private readonly List<(string Wait, int Item)> _putters = [];

    public IReadOnlyList<int> Items => _items;

    public int Waiting => _getters.Count + _putters.Count;

    protected override void Apply(string verb, string argument)
    {
        switch (verb)
        {
            case "put":
                string[] parts = argument.Split(':');
                Put(parts[0], int.Parse(parts[1], CultureInfo.InvariantCulture));
                break;
            case "get":
                Get(argument);
                break;
            default:
                throw new InvalidOperationException($"Unknown step {verb}.");
        }
    }

    protected override void Leave(string wait, string outcome)
    {
        if (_getters.Remove(wait) || _putters.RemoveAll(p => p.Wait == wait) > 0)
        {
            Outcomes[wait] = outcome; // a putter that gave up did not enqueue its item
        }
    }

    private void Put(string wait, int item)
    {
        if (CancelledOnArrival(wait))
        {
            return;
        }

        if (_getters.Count > 0)
        {
            Outcomes[_getters[0]] = item.ToString(CultureInfo.InvariantCulture); // straight to the oldest getter
            _getters.RemoveAt(0);
            Outcomes[wait] = Outcome.Ok;
        }
        else if (_items.Count < maxSize && _putters.Count == 0)
        {
            _items.Add(item);
            Outcomes[wait] = Outcome.Ok;
        }
        else
        {
            _putters.Add((wait, item));
            Outcomes[wait] = Outcome.Pending;
        }
    }

    private void Get(string wait)
    {
        if (CancelledOnArrival(wait))
        {
            return;
        }

        if (_items.Count > 0 && _getters.Count == 0)
        {
            Outcomes[wait] = _items[0].ToString(CultureInfo.InvariantCulture);
            _items.RemoveAt(0);
            if (_putters.Count > 0)
            {
                // The get made room: the oldest waiting putter's item moves in.
                _items.Add(_putters[0].Item);
                Outcomes[_putters[0].Wait] = Outcome.Ok;
                _putters.RemoveAt(0);
            }
        }
        else
        {
            _getters.Add(wait);
            Outcomes[wait] = Outcome.Pending;
        }
    }
}
