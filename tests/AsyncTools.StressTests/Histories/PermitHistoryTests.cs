using System.Globalization;
using AsyncPrimitives;
using CsCheck;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Histories;

/// <summary>
/// Linearizability of <see cref="AsyncLock"/> and <see cref="AsyncSemaphore"/>: try-acquire, acquire in every wait form
/// (zero timeout, forever, cancellable, timed, both), release (of one or two permits), and the cancellation and timer
/// expiry of a waiting acquire, run concurrently; every run must be explained by the sequential model: permits are
/// counted, waiters are served strictly in arrival order, a newcomer never takes a permit while anyone waits, a
/// cancelled or expired waiter holds nothing, and a release beyond the bound changes nothing.
/// </summary>
[Collection(HistoriesCollection.Name)]
public sealed class PermitHistoryTests(ITestOutputHelper output)
{
    [Fact]
    public void AsyncLock_ConcurrentHistories_AreLinearizable() =>
        Check("AsyncLock", maxRelease: 1, () => new PermitActual(isLock: true, 1, 1), () => new PermitModel(1, 1, isLock: true));

    [Fact]
    public void AsyncSemaphore_ConcurrentHistories_AreLinearizable() =>
        Check("AsyncSemaphore(1, max 2)", maxRelease: 2, () => new PermitActual(isLock: false, 1, 2), () => new PermitModel(1, 2, isLock: false));

    private void Check(string name, int maxRelease, Func<PermitActual> actual, Func<PermitModel> model) =>
        History.Check(
            output,
            name,
            () => (actual(), model()),
            Step.Plain.Operation<PermitActual, PermitModel>(s => $"TryAcquire{s}", (a, s) => a.TryAcquire(s), (m, s) => m.TryAcquire(s)),
            Step.Wait.Operation<PermitActual, PermitModel>(s => $"Acquire{s}", (a, s) => a.Acquire(s), (m, s) => m.Acquire(s)),
            Step.Wait.Operation<PermitActual, PermitModel>(s => $"Acquire{s}", (a, s) => a.Acquire(s), (m, s) => m.Acquire(s)),
            Gen.Select(Step.Plain, Gen.Int[1, maxRelease]).Operation<PermitActual, PermitModel>(t => $"Release({t.Item2}){t.Item1}", (a, t) => a.Release(t.Item1, t.Item2), (m, t) => m.Release(t.Item1, t.Item2)),
            Step.Plain.Operation<PermitActual, PermitModel>(s => $"Release(1){s}", (a, s) => a.Release(s, 1), (m, s) => m.Release(s, 1)),
            Step.CancelTarget.Operation<PermitActual, PermitModel>(t => $"Cancel({t})", (a, t) => a.Cancel(t), (m, t) => m.Cancel(t)),
            Step.ExpireTarget.Operation<PermitActual, PermitModel>(t => $"Expire({t})", (a, t) => a.Expire(t), (m, t) => m.Expire(t)));

    /// <summary>The real lock or semaphore.</summary>
    private sealed class PermitActual : ActualHistory
    {
        private readonly AsyncLock? _gate;
        private readonly AsyncSemaphore? _semaphore;

        public PermitActual(bool isLock, int initialCount, int maxCount)
        {
            _gate = isLock ? new AsyncLock(Time) : null;
            _semaphore = isLock ? null : new AsyncSemaphore(initialCount, maxCount, Time);
        }

        public void TryAcquire(Step step) =>
            Call(step, () => (_gate is not null ? _gate.TryAcquire(out _) : _semaphore!.TryAcquire()) ? "true" : "false");

        public void Acquire(Step step)
        {
            if (_gate is not null)
            {
                Wait(step, (timeout, ct) => _gate.AcquireAsync(timeout, ct));
            }
            else
            {
                Wait(step, (timeout, ct) => _semaphore!.AcquireAsync(timeout, ct));
            }
        }

        public void Release(Step step, int count) => Call(step, () =>
        {
            if (_gate is not null)
            {
                _gate.Release(); // count is 1: two calls would be two steps
            }
            else
            {
                _semaphore!.Release(count);
            }

            return Outcome.Ok;
        });

        protected override string State() => _gate is not null
            ? string.Create(CultureInfo.InvariantCulture, $"count={(_gate.IsLocked ? 0 : 1)} waiting={_gate.Lines.Waiting}")
            : string.Create(CultureInfo.InvariantCulture, $"count={_semaphore!.CurrentCount} waiting={_semaphore.Lines.Waiting}");
    }

    /// <summary>Counted permits and one FIFO line.</summary>
    private sealed class PermitModel(int initialCount, int maxCount, bool isLock) : ModelHistory
    {
        private readonly List<Step> _line = [];
        private int _count = initialCount;

        public void TryAcquire(Step step)
        {
            bool acquired = _line.Count == 0 && _count > 0;
            if (acquired)
            {
                _count--;
            }

            Record(step, acquired ? "true" : "false");
        }

        public void Acquire(Step step)
        {
            if (CancelledOnArrival(step))
            {
                return;
            }

            if (_line.Count == 0 && _count > 0)
            {
                _count--;
                Record(step, Outcome.Ok);
                return;
            }

            WaitOrFail(step, () => _line.Add(step));
        }

        public void Release(Step step, int count)
        {
            if (_count + count > maxCount)
            {
                Record(step, isLock ? "unheld" : "full"); // nothing changes
                return;
            }

            for (int i = 0; i < count; i++)
            {
                ReleaseOne();
            }

            Record(step, Outcome.Ok);
        }

        protected override void Leave(Step step, string outcome)
        {
            if (_line.Remove(step))
            {
                Record(step, outcome);
            }
        }

        protected override string State() => string.Create(CultureInfo.InvariantCulture, $"count={_count} waiting={_line.Count}");

        private void ReleaseOne()
        {
            if (_line.Count > 0)
            {
                Record(_line[0], Outcome.Ok); // the oldest waiter gets the permit
                _line.RemoveAt(0);
            }
            else
            {
                _count++;
            }
        }
    }
}
