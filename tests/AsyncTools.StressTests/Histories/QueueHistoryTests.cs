using System.Globalization;
using AsyncPrimitives;
using CsCheck;
using Xunit.Abstractions;

namespace AsyncTools.StressTests.Histories;

/// <summary>
/// Linearizability of the three queues (bounded to two items, so putters wait too): put and get in every wait form
/// and their try forms, task-done, join in every wait form, graceful and immediate shutdown, and the cancellation and
/// expiry of waiting puts, gets and joins, run concurrently. Afterwards the queue is drained with <c>TryGet</c>, so
/// the model checks the order of what was left (FIFO, LIFO, or smallest first with ties in insertion order) as well
/// as every item each get returned.
/// </summary>
/// <remarks>
/// The model: a put hands its item to the oldest waiting getter, else stores it if there is room, else waits; a get
/// takes from the store (first moving the oldest waiting putter's item in), else waits; getters and putters are
/// served in arrival order; every entered item counts as unfinished until its task-done, and joiners complete when
/// that count reaches zero; shutdown fails every waiting putter and getter, refuses later puts and, once empty, gets;
/// an immediate shutdown also drops what is stored and counts it done. A cancelled or expired put did not enqueue.
/// </remarks>
[Collection(HistoriesCollection.Name)]
public sealed class QueueHistoryTests(ITestOutputHelper output)
{
    private const int MaxSize = 2;

    public enum Order
    {
        Fifo,
        Lifo,
        Priority,
    }

    [Theory]
    [InlineData(Order.Fifo)]
    [InlineData(Order.Lifo)]
    [InlineData(Order.Priority)]
    public void Queue_ConcurrentHistories_AreLinearizable(Order order) =>
        History.Check(
            output,
            $"{order} queue (max 2)",
            () => (new QueueActual(order), new QueueModel(order)),
            Gen.Select(Step.Plain, Gen.Int[0, 9]).Operation<QueueActual, QueueModel>(t => $"TryPut({t.Item2}){t.Item1}", (a, t) => a.TryPut(t.Item1, t.Item2), (m, t) => m.Put(t.Item1, t.Item2, tryOnly: true)),
            Gen.Select(Step.Wait, Gen.Int[0, 9]).Operation<QueueActual, QueueModel>(t => $"Put({t.Item2}){t.Item1}", (a, t) => a.Put(t.Item1, t.Item2), (m, t) => m.Put(t.Item1, t.Item2, tryOnly: false)),
            Step.Plain.Operation<QueueActual, QueueModel>(s => $"TryGet{s}", (a, s) => a.TryGet(s), (m, s) => m.Get(s, tryOnly: true)),
            Step.Wait.Operation<QueueActual, QueueModel>(s => $"Get{s}", (a, s) => a.Get(s), (m, s) => m.Get(s, tryOnly: false)),
            Step.Plain.Operation<QueueActual, QueueModel>(s => $"TaskDone{s}", (a, s) => a.TaskDone(s), (m, s) => m.TaskDone(s)),
            Step.Wait.Operation<QueueActual, QueueModel>(s => $"Join{s}", (a, s) => a.Join(s), (m, s) => m.Join(s)),
            Gen.Select(Step.Plain, Gen.Bool).Operation<QueueActual, QueueModel>(t => $"Shutdown({(t.Item2 ? "immediate" : "graceful")}){t.Item1}", (a, t) => a.Shutdown(t.Item1, t.Item2), (m, t) => m.Shutdown(t.Item1, t.Item2)),
            Step.CancelTarget.Operation<QueueActual, QueueModel>(t => $"Cancel({t})", (a, t) => a.Cancel(t), (m, t) => m.Cancel(t)),
            Step.ExpireTarget.Operation<QueueActual, QueueModel>(t => $"Expire({t})", (a, t) => a.Expire(t), (m, t) => m.Expire(t)));

    private sealed class QueueActual : ActualHistory
    {
        private readonly AsyncQueueBase<int> _queue;

        public QueueActual(Order order) => _queue = order switch
        {
            Order.Fifo => new AsyncQueue<int>(MaxSize, Time),
            Order.Lifo => new AsyncLifoQueue<int>(MaxSize, Time),
            _ => new AsyncPriorityQueue<int>(MaxSize, timeProvider: Time),
        };

        public void TryPut(Step step, int item) => Call(step, () => _queue.TryPut(item) ? "true" : "false");

        public void Put(Step step, int item) => Wait(step, (timeout, ct) => _queue.PutAsync(item, timeout, ct));

        public void TryGet(Step step) => Call(step, () => _queue.TryGet(out int item) ? Show(item) : "false");

        public void Get(Step step) => Wait(step, (timeout, ct) => _queue.GetAsync(timeout, ct), Show);

        public void TaskDone(Step step) => Call(step, () =>
        {
            _queue.TaskDone();
            return Outcome.Ok;
        });

        public void Join(Step step) => Wait(step, (timeout, ct) => _queue.JoinAsync(timeout, ct));

        public void Shutdown(Step step, bool immediate) => Call(step, () =>
        {
            _queue.Shutdown(immediate);
            return Outcome.Ok;
        });

        protected override string State()
        {
            string state = string.Create(
                CultureInfo.InvariantCulture,
                $"count={_queue.Count} unfinished={_queue.UnfinishedTasks} shutdown={_queue.IsShutDown} waiting={_queue.Lines.Waiting}");

            // Drain what is left (a waiting putter's item moves in as room is made); after a shutdown the last TryGet throws.
            var drained = new List<int>();
            try
            {
                while (_queue.TryGet(out int item))
                {
                    drained.Add(item);
                }
            }
            catch (QueueShutDownException)
            {
            }

            return $"{state} drain=[{string.Join(",", drained)}]";
        }

        private static string Show(int item) => item.ToString(CultureInfo.InvariantCulture);
    }

    private sealed class QueueModel(Order order) : ModelHistory
    {
        private readonly List<(int Item, long Seq)> _store = [];
        private readonly List<Step> _getters = [];
        private readonly List<(Step Step, int Item)> _putters = [];
        private readonly List<Step> _joiners = [];
        private long _seq;
        private int _unfinished;
        private bool _shutDown;

        public void Put(Step step, int item, bool tryOnly)
        {
            if (!tryOnly && CancelledOnArrival(step))
            {
                return;
            }

            if (!_shutDown && _putters.Count == 0 && (_getters.Count > 0 || _store.Count < MaxSize))
            {
                if (_getters.Count > 0)
                {
                    Record(_getters[0], Show(item)); // straight to the oldest getter
                    _getters.RemoveAt(0);
                }
                else
                {
                    _store.Add((item, _seq++));
                }

                _unfinished++;
                Record(step, tryOnly ? "true" : Outcome.Ok);
            }
            else if (_shutDown)
            {
                Record(step, "shutdown");
            }
            else if (tryOnly)
            {
                Record(step, "false");
            }
            else
            {
                WaitOrFail(step, () => _putters.Add((step, item)));
            }
        }

        public void Get(Step step, bool tryOnly)
        {
            if (!tryOnly && CancelledOnArrival(step))
            {
                return;
            }

            if (_getters.Count == 0 && (_store.Count > 0 || _putters.Count > 0))
            {
                Record(step, Show(Take(_store, _putters, record: true)));
            }
            else if (_shutDown)
            {
                Record(step, "shutdown");
            }
            else if (tryOnly)
            {
                Record(step, "false");
            }
            else
            {
                WaitOrFail(step, () => _getters.Add(step));
            }
        }

        public void TaskDone(Step step)
        {
            if (_unfinished == 0)
            {
                Record(step, "invalid");
                return;
            }

            if (--_unfinished == 0)
            {
                CompleteJoiners();
            }

            Record(step, Outcome.Ok);
        }

        public void Join(Step step)
        {
            if (CancelledOnArrival(step))
            {
                return;
            }

            if (_joiners.Count == 0 && _unfinished == 0)
            {
                Record(step, Outcome.Ok);
                return;
            }

            WaitOrFail(step, () => _joiners.Add(step));
        }

        public void Shutdown(Step step, bool immediate)
        {
            _shutDown = true;
            if (immediate && _store.Count > 0)
            {
                _unfinished = Math.Max(0, _unfinished - _store.Count);
                _store.Clear();
                if (_unfinished == 0)
                {
                    CompleteJoiners();
                }
            }

            foreach ((Step putter, _) in _putters)
            {
                Record(putter, "shutdown");
            }

            foreach (Step getter in _getters)
            {
                Record(getter, "shutdown");
            }

            _putters.Clear();
            _getters.Clear();
            Record(step, Outcome.Ok);
        }

        protected override void Leave(Step step, string outcome)
        {
            int putter = _putters.FindIndex(p => p.Step == step);
            if (_getters.Remove(step) || _joiners.Remove(step))
            {
                Record(step, outcome);
            }
            else if (putter >= 0)
            {
                _putters.RemoveAt(putter);
                Record(step, outcome);
            }
        }

        protected override string State()
        {
            string state = string.Create(
                CultureInfo.InvariantCulture,
                $"count={_store.Count} unfinished={_unfinished} shutdown={_shutDown} waiting={_getters.Count + _putters.Count + _joiners.Count}");

            // Drain a copy: the model's state is read more than once.
            var store = new List<(int Item, long Seq)>(_store);
            var putters = new List<(Step Step, int Item)>(_putters);
            var drained = new List<int>();
            long seq = _seq;
            while (store.Count > 0 || putters.Count > 0)
            {
                drained.Add(Take(store, putters, record: false, ref seq));
            }

            return $"{state} drain=[{string.Join(",", drained)}]";
        }

        private static string Show(int item) => item.ToString(CultureInfo.InvariantCulture);

        private int Take(List<(int Item, long Seq)> store, List<(Step Step, int Item)> putters, bool record)
        {
            int item = Take(store, putters, record, ref _seq);
            return item;
        }

        /// <summary>Takes the next item: first the oldest waiting putter's item moves in (and that put completes).</summary>
        private int Take(List<(int Item, long Seq)> store, List<(Step Step, int Item)> putters, bool record, ref long seq)
        {
            if (putters.Count > 0)
            {
                store.Add((putters[0].Item, seq++));
                if (record)
                {
                    _unfinished++;
                    Record(putters[0].Step, Outcome.Ok);
                }

                putters.RemoveAt(0);
            }

            int index = 0;
            for (int i = 1; i < store.Count; i++)
            {
                bool better = order switch
                {
                    Order.Fifo => store[i].Seq < store[index].Seq,
                    Order.Lifo => store[i].Seq > store[index].Seq,
                    _ => store[i].Item < store[index].Item || (store[i].Item == store[index].Item && store[i].Seq < store[index].Seq),
                };
                if (better)
                {
                    index = i;
                }
            }

            int item = store[index].Item;
            store.RemoveAt(index);
            return item;
        }

        private void CompleteJoiners()
        {
            foreach (Step joiner in _joiners)
            {
                Record(joiner, Outcome.Ok);
            }

            _joiners.Clear();
        }
    }
}
