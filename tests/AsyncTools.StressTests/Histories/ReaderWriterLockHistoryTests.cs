using System.Globalization;
using AsyncPrimitives;
using CsCheck;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Histories;

/// <summary>
/// Linearizability of <see cref="AsyncReaderWriterLock"/> (at most two readers): read and write acquires in every
/// wait form and their try forms, read and write releases, and the cancellation and expiry of waiting acquires, run
/// concurrently. The model admits from the head of one FIFO line only (a waiting writer holds back later readers),
/// and a waiter that gives up lets the ones behind it in when it was what held them back.
/// </summary>
[Collection(HistoriesCollection.Name)]
public sealed class ReaderWriterLockHistoryTests(ITestOutputHelper output)
{
    private const int MaxReaders = 2;

    [Fact]
    public void AsyncReaderWriterLock_ConcurrentHistories_AreLinearizable() =>
        History.Check(
            output,
            "AsyncReaderWriterLock(maxReaders 2)",
            () => (new RwActual(), new RwModel()),
            Gen.Select(Step.Plain, Gen.Bool).Operation<RwActual, RwModel>(t => $"TryAcquire({Kind(t.Item2)}){t.Item1}", (a, t) => a.TryAcquire(t.Item1, t.Item2), (m, t) => m.TryAcquire(t.Item1, t.Item2)),
            Gen.Select(Step.Wait, Gen.Bool).Operation<RwActual, RwModel>(t => $"Acquire({Kind(t.Item2)}){t.Item1}", (a, t) => a.Acquire(t.Item1, t.Item2), (m, t) => m.Acquire(t.Item1, t.Item2)),
            Gen.Select(Step.Wait, Gen.Bool).Operation<RwActual, RwModel>(t => $"Acquire({Kind(t.Item2)}){t.Item1}", (a, t) => a.Acquire(t.Item1, t.Item2), (m, t) => m.Acquire(t.Item1, t.Item2)),
            Gen.Select(Step.Plain, Gen.Bool).Operation<RwActual, RwModel>(t => $"Release({Kind(t.Item2)}){t.Item1}", (a, t) => a.Release(t.Item1, t.Item2), (m, t) => m.Release(t.Item1, t.Item2)),
            Step.CancelTarget.Operation<RwActual, RwModel>(t => $"Cancel({t})", (a, t) => a.Cancel(t), (m, t) => m.Cancel(t)),
            Step.ExpireTarget.Operation<RwActual, RwModel>(t => $"Expire({t})", (a, t) => a.Expire(t), (m, t) => m.Expire(t)));

    private static string Kind(bool writer) => writer ? "write" : "read";

    private sealed class RwActual : ActualHistory
    {
        private readonly AsyncReaderWriterLock _rw;

        public RwActual() => _rw = new AsyncReaderWriterLock(MaxReaders, Time);

        public void TryAcquire(Step step, bool writer) =>
            Call(step, () => (writer ? _rw.TryAcquireWrite(out _) : _rw.TryAcquireRead(out _)) ? "true" : "false");

        public void Acquire(Step step, bool writer) =>
            Wait(step, (timeout, ct) => writer ? _rw.AcquireWriteAsync(timeout, ct) : _rw.AcquireReadAsync(timeout, ct), r => r.IsWriter == writer ? Outcome.Ok : "wrong-releaser");

        public void Release(Step step, bool writer) => Call(step, () =>
        {
            if (writer)
            {
                _rw.ReleaseWrite();
            }
            else
            {
                _rw.ReleaseRead();
            }

            return Outcome.Ok;
        });

        protected override string State() =>
            string.Create(CultureInfo.InvariantCulture, $"readers={_rw.CurrentReaderCount} writer={_rw.IsWriteLockHeld} waiting={_rw.Lines.Waiting}");
    }

    private sealed class RwModel : ModelHistory
    {
        private readonly List<(Step Step, bool Writer)> _line = [];
        private int _readers;
        private bool _writer;

        public void TryAcquire(Step step, bool writer) => Record(step, _line.Count == 0 && TryEnter(writer) ? "true" : "false");

        public void Acquire(Step step, bool writer)
        {
            if (CancelledOnArrival(step))
            {
                return;
            }

            if (_line.Count == 0 && TryEnter(writer))
            {
                Record(step, Outcome.Ok);
                return;
            }

            WaitOrFail(step, () => _line.Add((step, writer)));
        }

        public void Release(Step step, bool writer)
        {
            if (writer ? !_writer : _readers == 0)
            {
                Record(step, "unheld");
                return;
            }

            if (writer)
            {
                _writer = false;
            }
            else
            {
                _readers--;
            }

            Admit();
            Record(step, Outcome.Ok);
        }

        protected override void Leave(Step step, string outcome)
        {
            int i = _line.FindIndex(w => w.Step == step);
            if (i >= 0)
            {
                _line.RemoveAt(i);
                Record(step, outcome);
                Admit(); // a writer that gave up may have been holding back readers
            }
        }

        protected override string State() =>
            string.Create(CultureInfo.InvariantCulture, $"readers={_readers} writer={_writer} waiting={_line.Count}");

        private bool TryEnter(bool writer)
        {
            if (_writer || (writer ? _readers > 0 : _readers >= MaxReaders))
            {
                return false;
            }

            if (writer)
            {
                _writer = true;
            }
            else
            {
                _readers++;
            }

            return true;
        }

        private void Admit()
        {
            while (_line.Count > 0 && TryEnter(_line[0].Writer))
            {
                Record(_line[0].Step, Outcome.Ok);
                _line.RemoveAt(0);
            }
        }
    }
}
