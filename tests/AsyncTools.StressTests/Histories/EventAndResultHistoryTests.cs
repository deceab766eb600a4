using System.Globalization;
using AsyncPrimitives;
using CsCheck;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Histories;

/// <summary>
/// Linearizability of <see cref="AsyncEvent"/> (set, clear, waits in every form, their cancellation and expiry) and
/// <see cref="AsyncResult{T}"/> (set, try-set, set-exception, gets in every form, try-get, cancellation and expiry):
/// a set wakes every waiter queued before it (also those queued before a clear), a wait on a set event or result
/// returns at once, a second set changes nothing.
/// </summary>
[Collection(HistoriesCollection.Name)]
public sealed class EventAndResultHistoryTests(ITestOutputHelper output)
{
    [Fact]
    public void AsyncEvent_ConcurrentHistories_AreLinearizable() =>
        History.Check(
            output,
            "AsyncEvent",
            () => (new EventActual(), new EventModel()),
            Step.Plain.Operation<EventActual, EventModel>(s => $"Set{s}", (a, s) => a.Set(s), (m, s) => m.Set(s)),
            Step.Plain.Operation<EventActual, EventModel>(s => $"Clear{s}", (a, s) => a.Clear(s), (m, s) => m.Clear(s)),
            Step.Wait.Operation<EventActual, EventModel>(s => $"Wait{s}", (a, s) => a.WaitFor(s), (m, s) => m.WaitFor(s)),
            Step.Wait.Operation<EventActual, EventModel>(s => $"Wait{s}", (a, s) => a.WaitFor(s), (m, s) => m.WaitFor(s)),
            Step.CancelTarget.Operation<EventActual, EventModel>(t => $"Cancel({t})", (a, t) => a.Cancel(t), (m, t) => m.Cancel(t)),
            Step.ExpireTarget.Operation<EventActual, EventModel>(t => $"Expire({t})", (a, t) => a.Expire(t), (m, t) => m.Expire(t)));

    [Fact]
    public void AsyncResult_ConcurrentHistories_AreLinearizable() =>
        History.Check(
            output,
            "AsyncResult<int>",
            () => (new ResultActual(), new ResultModel()),
            Gen.Select(Step.Plain, Gen.Int[1, 9], Gen.Int[0, 2]).Operation<ResultActual, ResultModel>(
                t => $"{SetName(t.Item3)}({t.Item2}){t.Item1}", (a, t) => a.Set(t.Item1, t.Item2, t.Item3), (m, t) => m.Set(t.Item1, t.Item2, t.Item3)),
            Step.Wait.Operation<ResultActual, ResultModel>(s => $"Get{s}", (a, s) => a.Get(s), (m, s) => m.Get(s)),
            Step.Wait.Operation<ResultActual, ResultModel>(s => $"Get{s}", (a, s) => a.Get(s), (m, s) => m.Get(s)),
            Step.Plain.Operation<ResultActual, ResultModel>(s => $"TryGet{s}", (a, s) => a.TryGet(s), (m, s) => m.TryGet(s)),
            Step.CancelTarget.Operation<ResultActual, ResultModel>(t => $"Cancel({t})", (a, t) => a.Cancel(t), (m, t) => m.Cancel(t)),
            Step.ExpireTarget.Operation<ResultActual, ResultModel>(t => $"Expire({t})", (a, t) => a.Expire(t), (m, t) => m.Expire(t)));

    private static string SetName(int how) => how switch { 0 => "Set", 1 => "TrySet", _ => "TrySetException" };

    private sealed class EventActual : ActualHistory
    {
        private readonly AsyncEvent _event;

        public EventActual() => _event = new AsyncEvent(timeProvider: Time);

        public void Set(Step step) => Call(step, () =>
        {
            _event.Set();
            return Outcome.Ok;
        });

        public void Clear(Step step) => Call(step, () =>
        {
            _event.Clear();
            return Outcome.Ok;
        });

        public void WaitFor(Step step) => Wait(step, (timeout, ct) => _event.WaitAsync(timeout, ct));

        protected override string State() => string.Create(CultureInfo.InvariantCulture, $"set={_event.IsSet} waiting={_event.Lines.Waiting}");
    }

    private sealed class EventModel : ModelHistory
    {
        private readonly List<Step> _line = [];
        private bool _set;

        public void Set(Step step)
        {
            _set = true;
            foreach (Step waiter in _line)
            {
                Record(waiter, Outcome.Ok);
            }

            _line.Clear();
            Record(step, Outcome.Ok);
        }

        public void Clear(Step step)
        {
            _set = false;
            Record(step, Outcome.Ok);
        }

        public void WaitFor(Step step)
        {
            if (CancelledOnArrival(step))
            {
                return;
            }

            if (_set)
            {
                Record(step, Outcome.Ok);
                return;
            }

            WaitOrFail(step, () => _line.Add(step));
        }

        protected override void Leave(Step step, string outcome)
        {
            if (_line.Remove(step))
            {
                Record(step, outcome);
            }
        }

        protected override string State() => string.Create(CultureInfo.InvariantCulture, $"set={_set} waiting={_line.Count}");
    }

    private sealed class ResultActual : ActualHistory
    {
        private readonly AsyncResult<int> _result;

        public ResultActual() => _result = new AsyncResult<int>(Time);

        public void Set(Step step, int value, int how) => Call(step, () => how switch
        {
            0 => Run(() => _result.Set(value)),
            1 => _result.TrySet(value) ? "true" : "false",
            _ => _result.TrySetException(new FormatException(value.ToString(CultureInfo.InvariantCulture))) ? "true" : "false",
        });

        public void Get(Step step) => Wait(step, (timeout, ct) => _result.GetAsync(timeout, ct), v => v.ToString(CultureInfo.InvariantCulture));

        public void TryGet(Step step) => Call(step, () => _result.TryGet(out int v) ? v.ToString(CultureInfo.InvariantCulture) : "false");

        protected override string State()
        {
            string value;
            try
            {
                value = _result.TryGet(out int v) ? v.ToString(CultureInfo.InvariantCulture) : "none";
            }
            catch (FormatException)
            {
                value = nameof(FormatException);
            }

            return string.Create(CultureInfo.InvariantCulture, $"set={_result.IsSet} waiting={_result.Lines.Waiting} value={value}");
        }

        private static string Run(Action action)
        {
            action();
            return Outcome.Ok;
        }
    }

    private sealed class ResultModel : ModelHistory
    {
        private readonly List<Step> _line = [];
        private bool _set;
        private int? _value;

        public void Set(Step step, int value, int how)
        {
            if (_set)
            {
                Record(step, how == 0 ? "invalid" : "false");
                return;
            }

            _set = true;
            _value = how == 2 ? null : value;
            foreach (Step waiter in _line)
            {
                Record(waiter, Got());
            }

            _line.Clear();
            Record(step, how == 0 ? Outcome.Ok : "true");
        }

        public void Get(Step step)
        {
            if (CancelledOnArrival(step))
            {
                return;
            }

            if (_set)
            {
                Record(step, Got()); // the value, or the exception as a refusal (before any zero-timeout check)
                return;
            }

            WaitOrFail(step, () => _line.Add(step));
        }

        public void TryGet(Step step) => Record(step, _set ? Got() : "false");

        protected override void Leave(Step step, string outcome)
        {
            if (_line.Remove(step))
            {
                Record(step, outcome);
            }
        }

        protected override string State() =>
            string.Create(CultureInfo.InvariantCulture, $"set={_set} waiting={_line.Count} value={(_set ? Got() : "none")}");

        private string Got() => _value is { } v ? v.ToString(CultureInfo.InvariantCulture) : nameof(FormatException);
    }
}
