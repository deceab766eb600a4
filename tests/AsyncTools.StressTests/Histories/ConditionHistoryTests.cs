using System.Globalization;
using AsyncPrimitives;
using CsCheck;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Histories;

/// <summary>
/// Linearizability of <see cref="AsyncCondition"/> and its lock: lock acquires in every wait form, condition waits in
/// every form, notify (one, two, all), the cancellation and expiry of waits, and releases, run concurrently.
/// </summary>
/// <remarks>
/// The lock has an owner in every history: whoever was last handed it (an acquire or a condition wait that completed,
/// also by timeout or cancellation, since a condition wait re-acquires the lock before it returns). Only that owner
/// releases it (<c>ReleaseHolder</c>) or waits on the condition with it (<c>WaitAsHolder</c>), as real code does; a
/// step that finds no owner whose wait has completed does nothing ("none"). The model: waits are notified in the order
/// they began; a waiter that leaves the condition's line (notified, timed out or cancelled) joins the tail of the
/// lock's line and completes when the lock is handed to it, ahead of anyone who asked for the lock later.
/// </remarks>
[Collection(HistoriesCollection.Name)]
public sealed class ConditionHistoryTests(ITestOutputHelper output)
{
    [Fact]
    public void AsyncCondition_ConcurrentHistories_AreLinearizable() =>
        History.Check(
            output,
            "AsyncCondition",
            () => (new ConditionActual(), new ConditionModel()),
            Step.Wait.Operation<ConditionActual, ConditionModel>(s => $"Acquire{s}", (a, s) => a.Acquire(s), (m, s) => m.Acquire(s)),
            Step.Plain.Operation<ConditionActual, ConditionModel>(s => $"ReleaseHolder{s}", (a, s) => a.ReleaseHolder(s), (m, s) => m.ReleaseHolder(s)),
            Step.Wait.Operation<ConditionActual, ConditionModel>(s => $"WaitAsHolder{s}", (a, s) => a.WaitAsHolder(s), (m, s) => m.WaitAsHolder(s)),
            Step.Wait.Operation<ConditionActual, ConditionModel>(s => $"WaitAsHolder{s}", (a, s) => a.WaitAsHolder(s), (m, s) => m.WaitAsHolder(s)),
            Gen.Select(Step.Plain, Gen.Int[0, 2]).Operation<ConditionActual, ConditionModel>(
                t => $"{(t.Item2 == 0 ? "NotifyAll" : $"Notify({t.Item2})")}{t.Item1}", (a, t) => a.Notify(t.Item1, t.Item2), (m, t) => m.Notify(t.Item1, t.Item2)),
            Step.CancelTarget.Operation<ConditionActual, ConditionModel>(t => $"Cancel({t})", (a, t) => a.Cancel(t), (m, t) => m.Cancel(t)),
            Step.ExpireTarget.Operation<ConditionActual, ConditionModel>(t => $"Expire({t})", (a, t) => a.Expire(t), (m, t) => m.Expire(t)));

    private sealed class ConditionActual : ActualHistory
    {
        private readonly AsyncLock _lock;
        private readonly AsyncCondition _condition;
        private readonly List<Holder> _holders = [];

        public ConditionActual()
        {
            _lock = new AsyncLock(Time);
            _condition = new AsyncCondition(_lock, Time);
        }

        // The steps that change or look up the owner (acquire, release, wait) are serialized by the test's own lock,
        // so the test's record of who owns the lock is always up to date when an owner step reads it; notify, cancel
        // and expire race with them freely (and with the grants, moves and hand-offs they cause).
        public void Acquire(Step step)
        {
            lock (_holders)
            {
                ValueTask<AsyncLock.Releaser> acquire = Wait(step, (timeout, ct) => _condition.AcquireAsync(timeout, ct));
                AddHolder(step, () => acquire.IsCompletedSuccessfully);
            }
        }

        public void ReleaseHolder(Step step)
        {
            lock (_holders)
            {
                Call(step, () =>
                {
                    if (TakeHolder() is not { } holder)
                    {
                        return "none";
                    }

                    _condition.Release();
                    return $"released {holder}";
                });
            }
        }

        public void WaitAsHolder(Step step)
        {
            lock (_holders)
            {
                if (TakeHolder() is null)
                {
                    Call(step, () => "none");
                    return;
                }

                // The holder's lock is released by the wait once it is in line (or kept if the wait fails at once),
                // and handed back to this wait when it completes, whatever its outcome.
                ValueTask wait = Wait(step, (timeout, ct) => _condition.WaitAsync(timeout, ct));
                AddHolder(step, () => wait.IsCompleted);
            }
        }

        public void Notify(Step step, int count) => Call(step, () =>
        {
            if (count == 0)
            {
                _condition.NotifyAll();
            }
            else
            {
                _condition.Notify(count);
            }

            return Outcome.Ok;
        });

        protected override string State() =>
            string.Create(CultureInfo.InvariantCulture, $"locked={_condition.IsLocked} waiting={_condition.Lines.Waiting} lock-waiting={_lock.Lines.Waiting}");

        private void AddHolder(Step step, Func<bool> holds) => _holders.Add(new Holder(step, holds)); // under _holders

        /// <summary>The lock's owner, if it is a completed wait nobody has taken over yet; marks it taken.</summary>
        /// <remarks>
        /// A notify, cancel or expire on the other thread can hand the lock to a condition wait and still be on its way
        /// to delivering that wait's outcome: the engine decides a grant under its lock and delivers it right after
        /// leaving it, before that call returns. In that moment the lock is held and no owner's wait has completed.
        /// The owner is then that wait, as soon as the delivery lands (its own code would be resumed by it), so this
        /// waits for the delivery rather than report "none", which no order of the steps could explain. Only the
        /// owner steps, serialized under <see cref="_holders"/>, release the lock, so it stays held meanwhile.
        /// </remarks>
        private Step? TakeHolder() // under _holders
        {
            Holder? owner = null;
            if (!SpinWait.SpinUntil(
                () => (owner = _holders.Find(h => !h.Taken && h.Holds())) is not null || !_condition.IsLocked,
                TimeSpan.FromSeconds(30)))
            {
                throw new InvalidOperationException("the lock stayed held for 30 s without any owner's wait completing");
            }

            if (owner is null)
            {
                return null;
            }

            owner.Taken = true;
            return owner.Step;
        }

        private sealed class Holder(Step step, Func<bool> holds)
        {
            public Step Step => step;

            public Func<bool> Holds => holds;

            public bool Taken { get; set; }
        }
    }

    private sealed class ConditionModel : ModelHistory
    {
        /// <summary>Condition waiters, oldest first.</summary>
        private readonly List<Step> _waiting = [];

        /// <summary>The lock's line: plain acquirers and condition waiters re-acquiring, oldest first.</summary>
        private readonly List<Step> _lockLine = [];

        /// <summary>What a condition waiter that left the condition's line will return once it has the lock again.</summary>
        private readonly Dictionary<Step, string> _decided = [];

        /// <summary>The lock's owner, or null when the lock is free.</summary>
        private Step? _holder;

        public void Acquire(Step step)
        {
            if (CancelledOnArrival(step))
            {
                return;
            }

            if (_holder is null && _lockLine.Count == 0)
            {
                _holder = step;
                Record(step, Outcome.Ok);
                return;
            }

            WaitOrFail(step, () => _lockLine.Add(step));
        }

        public void ReleaseHolder(Step step)
        {
            if (_holder is not { } holder)
            {
                Record(step, "none");
                return;
            }

            Record(step, $"released {holder}");
            ReleaseLock();
        }

        public void WaitAsHolder(Step step)
        {
            if (_holder is null)
            {
                Record(step, "none");
                return;
            }

            if (CancelledOnArrival(step))
            {
                _holder = step; // failed at once: the caller still holds the lock
                return;
            }

            if (step.Form == WaitForm.Zero)
            {
                Record(step, Outcome.TimedOut);
                _holder = step;
                return;
            }

            _waiting.Add(step);
            Record(step, Outcome.Pending);
            if (ExpiredBefore(step))
            {
                Leave(step, Outcome.TimedOut); // to the lock's line, which the caller's lock still blocks
            }

            ReleaseLock();
        }

        public void Notify(Step step, int count)
        {
            int n = count == 0 ? _waiting.Count : Math.Min(count, _waiting.Count);
            for (int i = 0; i < n; i++)
            {
                Step waiter = _waiting[0];
                _waiting.RemoveAt(0);
                JoinLockLine(waiter, Outcome.Ok);
            }

            Record(step, Outcome.Ok);
        }

        protected override void Leave(Step step, string outcome)
        {
            if (_waiting.Remove(step))
            {
                JoinLockLine(step, outcome);
            }
            else if (!_decided.ContainsKey(step) && _lockLine.Remove(step))
            {
                Record(step, outcome); // a plain acquirer gave up; a re-acquiring condition waiter can no longer
            }
        }

        protected override string State() =>
            string.Create(CultureInfo.InvariantCulture, $"locked={_holder is not null} waiting={_waiting.Count} lock-waiting={_lockLine.Count}");

        private void JoinLockLine(Step waiter, string outcome)
        {
            _decided[waiter] = outcome;
            if (_holder is null && _lockLine.Count == 0)
            {
                Grant(waiter);
            }
            else
            {
                _lockLine.Add(waiter);
            }
        }

        private void ReleaseLock()
        {
            _holder = null;
            if (_lockLine.Count > 0)
            {
                Step next = _lockLine[0];
                _lockLine.RemoveAt(0);
                Grant(next);
            }
        }

        private void Grant(Step step)
        {
            _holder = step;
            Record(step, _decided.TryGetValue(step, out string? outcome) ? outcome : Outcome.Ok);
        }
    }
}
