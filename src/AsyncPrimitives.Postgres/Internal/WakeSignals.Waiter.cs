namespace AsyncPrimitives.Postgres.Internal;

/// <content>
/// One wait on a key: taking its next signal (<see cref="Waiter.Arm"/>) and sleeping until that signal or its poll comes
/// (<see cref="Waiter.BeginSleep"/>, <see cref="Waiter.UntilTurn"/>, <see cref="Waiter.Looked"/>), where it stands in
/// its key's line (<see cref="Waiter.SetRank"/>), a wake from a release in this process (<see cref="Waiter.Wake"/>), and
/// what it hands on when it leaves (<see cref="Waiter.Dispose"/>).
/// </content>
internal sealed partial class WakeSignals
{
    /// <summary>One wait on a key.</summary>
    public sealed class Waiter(WakeSignals owner, string key, int wakeLimit, long order, Polling polling) : IDisposable
    {
        private readonly WakeSignals _owner = owner;
        private readonly string _key = key;
        private readonly Polling _polling = polling;
        private bool _left;

        internal int WakeLimit { get; } = wakeLimit;

        /// <summary>Whether the key's waits are served in line by ticket (<see cref="Polling.FirstInLine"/>).</summary>
        internal bool InLine => _polling == Polling.FirstInLine;

        /// <summary>The order in which the waits entered; guarded by the owner's lock.</summary>
        internal long Order { get; } = order;

        /// <summary>The wait's place in line (a permit wait's ticket), lowest first; unknown (last) until it has one.
        /// Guarded by the owner's lock.</summary>
        internal long Rank { get; private set; } = long.MaxValue;

        /// <summary>The signal the wait sleeps on; replaced by <see cref="Arm"/> once it fired. Guarded by the owner's lock.</summary>
        internal TaskCompletionSource Signal { get; private set; } = NewSignal();

        /// <summary>Whether <see cref="Signal"/> fired and the wait has not asked the server since. Guarded by the owner's lock.</summary>
        internal bool IsWoken { get; set; }

        /// <summary>A permit wait's: whether a signal since it last asked passed it over while its ticket was not known;
        /// <see cref="SetRank"/> decides it again. Guarded by the owner's lock.</summary>
        internal bool PassedOverWithoutRank { get; set; }

        /// <summary>A getter's (<see cref="Polling.ByTurns"/>): whether <see cref="Arm"/> used up a wake for a call that
        /// has not looked yet (<see cref="Looked"/>): a getter that leaves before its call looked (it was never sent, or
        /// never ran, or its answer was lost) passes the wake on, as one it never used. Guarded by the owner's lock.</summary>
        private bool _wakeInHand;

        /// <summary>While the wait sleeps without polling (see <see cref="BeginSleep"/>): completed when it becomes one of
        /// the first in line, so that it polls from then on; null otherwise. Guarded by the owner's lock.</summary>
        internal TaskCompletionSource? Promotion { get; set; }

        /// <summary>Before the wait asks the server: the task that completes at the next signal for this wait (a signal
        /// that came since the last call is used up by this call).</summary>
        public Task Arm()
        {
            lock (_owner._sync)
            {
                if (IsWoken)
                {
                    IsWoken = false;
                    _wakeInHand = _polling == Polling.ByTurns;
                    Signal = NewSignal();
                }

                PassedOverWithoutRank = false; // the call it is about to make sees what that signal announced
                Promotion = null;
                return Signal.Task;
            }
        }

        /// <summary>
        /// After the wait asked the server, as it goes to sleep until the task <see cref="Arm"/> returned completes:
        /// null when it must also ask the server again when it is due to poll (<see cref="UntilTurn"/>); for a wait of
        /// <see cref="Polling.FirstInLine"/> further back than the first wake limit in line, a task that completes when it
        /// becomes one of them, and must poll from then on.
        /// </summary>
        public Task? BeginSleep()
        {
            lock (_owner._sync)
            {
                Promotion = _polling != Polling.FirstInLine || Rank == long.MaxValue || IsAmongFirst(_owner._entries[_key])
                    ? null
                    : NewSignal();
                return Promotion?.Task;
            }
        }

        /// <summary>
        /// Once a wait that polls has slept a poll interval: how long until it is its turn to poll (zero: now). A wait of
        /// <see cref="Polling.ByTurns"/> takes the turn when a poll is due (<paramref name="interval"/> after the last
        /// look on its key) and no other has it, or has had it for an interval without looking. Any other wait's turn is
        /// now.
        /// </summary>
        public TimeSpan UntilTurn(TimeSpan interval)
        {
            if (_polling != Polling.ByTurns)
            {
                return TimeSpan.Zero;
            }

            lock (_owner._sync)
            {
                Line line = _owner._entries[_key];
                if (line.TurnTaker is not null && line.TurnTaker != this)
                {
                    TimeSpan held = Since(ref line.TurnTakenAt);
                    if (held < interval)
                    {
                        return interval - held;
                    }
                }

                TimeSpan since = Since(ref line.LastLook);
                if (since < interval)
                {
                    return interval - since;
                }

                line.TurnTaker = this;
                line.TurnTakenAt = _owner._time.GetTimestamp();
                return TimeSpan.Zero;
            }
        }

        /// <summary>After a call that looked (for a get: one that looked for items), sent at <paramref name="sentAt"/> (a
        /// timestamp of the owner's clock): the next turn of the key's waits is due a poll interval after it.</summary>
        public void Looked(long sentAt)
        {
            lock (_owner._sync)
            {
                _wakeInHand = false; // used
                Line line = _owner._entries[_key];
                line.LastLook = sentAt; // an older one (a call held up) only brings the next turn nearer
                if (line.TurnTaker == this)
                {
                    line.TurnTaker = null;
                }
            }
        }

        /// <summary>The time since <paramref name="timestamp"/>. Once the clock's readings stepped back past it (a clock
        /// built on wall-clock time), it counts from now: a turn is neither put off by the step nor due more than an
        /// interval away. Under the owner's lock.</summary>
        private TimeSpan Since(ref long timestamp)
        {
            long now = _owner._time.GetTimestamp();
            TimeSpan since = _owner._time.GetElapsedTime(timestamp, now);
            if (since >= TimeSpan.Zero)
            {
                return since;
            }

            timestamp = now;
            return TimeSpan.Zero;
        }

        /// <summary>Whether fewer than <see cref="WakeLimit"/> of <paramref name="waiters"/> (the key's) are ahead of this
        /// wait in line. Under the owner's lock.</summary>
        internal bool IsAmongFirst(List<Waiter> waiters)
        {
            int ahead = 0;
            foreach (Waiter other in waiters)
            {
                if (s_byPlace(other, this) < 0 && ++ahead == WakeLimit)
                {
                    return false;
                }
            }

            return true;
        }

        /// <summary>Wakes this wait alone, unless it is woken already or has left.</summary>
        public void Wake()
        {
            TaskCompletionSource? fired = null;
            lock (_owner._sync)
            {
                if (!_left && !IsWoken)
                {
                    IsWoken = true;
                    fired = Signal;
                }
            }

            fired?.TrySetResult();
        }

        /// <summary>Records the wait's place in line. A signal that passed the wait over while its place was not known
        /// wakes it now if it is among the first wake limit in line (the release it announced may have granted it its
        /// permit). A wait that queued again at the back may leave a wait that slept without polling among the first,
        /// which asks the server at once and polls from then on.</summary>
        public void SetRank(long rank)
        {
            List<TaskCompletionSource>? promoted = null;
            lock (_owner._sync)
            {
                bool movedBack = rank > Rank && Rank != long.MaxValue;
                Rank = rank;
                if (PassedOverWithoutRank)
                {
                    PassedOverWithoutRank = false;
                    if (!IsWoken && IsAmongFirst(_owner._entries[_key]))
                    {
                        IsWoken = true;
                        (promoted = []).Add(Signal);
                    }
                }

                if (movedBack)
                {
                    promoted = PromoteNewlyFirst(_owner._entries[_key], askNow: true);
                }
            }

            Fire(promoted);
        }

        /// <summary>Ends the wait; a wake it holds and did not use goes to the next wait on the key (for a getter, also one
        /// its call took and did not look with), and so does a turn it took and did not use (<see cref="Polling.ByTurns"/>).
        /// Idempotent.</summary>
        public void Dispose()
        {
            bool passOn;
            List<TaskCompletionSource>? promoted = null;
            lock (_owner._sync)
            {
                if (_left)
                {
                    return;
                }

                _left = true;
                passOn = IsWoken || _wakeInHand;
                Line waiters = _owner._entries[_key];
                waiters.Remove(this);
                if (waiters.Count == 0)
                {
                    _owner._entries.Remove(_key);
                }
                else if (Rank != long.MaxValue)
                {
                    promoted = PromoteNewlyFirst(waiters, askNow: false);
                }
                else if (waiters.TurnTaker == this)
                {
                    // It took the turn and leaves without having looked: the next getter looks in its stead, now.
                    waiters.TurnTaker = null;
                    passOn = true;
                }
            }

            Fire(promoted);
            if (passOn)
            {
                _owner.Signal(_key);
            }
        }

        // Continuations run asynchronously: a signal comes from the LISTEN loop, which must not run waits inline.
        private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
