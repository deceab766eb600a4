namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// The wake-ups of one coordinator, by key (<c>"l:name"</c> for a lock, <c>"s:name"</c> a semaphore, <c>"q:name"</c> a
/// queue's new items, <c>"j:name"</c> its unfinished count reaching zero). A notification from the server, or a change
/// made in this process, signals a key; the waits on that key that may go ahead then check the server again.
/// </summary>
/// <remarks>
/// <para>A signal wakes at most the key's <em>wake limit</em> of waits that are not woken already, in order: first those
/// with the lowest rank (a permit wait's ticket: its place in the server's line), then in the order they entered. So a
/// notification of a lock's release wakes the one local wait that is first in line, and a put wakes one getter, instead
/// of every wait asking the server at once and all but one finding nothing. (A release in this process knows which
/// waits it granted, and wakes just those: <see cref="Waiter.Wake"/>.) A permit wait whose ticket is not known here yet
/// (the call that takes its place has not answered) may be ahead of every wait known here in the server's line, and the
/// release may have granted it its permit: a signal that passes it over is decided again once its ticket is known
/// (<see cref="Waiter.SetRank"/>), and wakes it then if it is among the first wake limit in line. A wait that got what it
/// waited for and leaves something for the next (a getter that took items: more may be there) signals the key again; a
/// wait that leaves holding a wake it did not use passes it on.</para>
/// <para>A wait takes its next signal (<see cref="Waiter.Arm"/>) <em>before</em> it asks the server, so a signal that
/// arrives while it asks is not missed: the task it then awaits has already completed.</para>
/// <para><b>Polling.</b> Between signals the waits also ask the server on their own, every poll interval (the backstop
/// for a missed notification), each key's as its waits are served (<see cref="Polling"/>). A lock's or semaphore's
/// waits are served in line, so only the first wake limit in line poll (<see cref="Polling.FirstInLine"/>; a wait
/// whose ticket is not known yet polls too): a wait further back sleeps until a signal reaches it, or until the waits
/// ahead of it leave or queue again at the back and it becomes one of the first, when it polls from then on (without a
/// call when the wait ahead left: a grant to the first of a lock's waits here would otherwise cost the next one a call
/// that finds the lock held; with one when it queued again, as its place had expired: the places behind it, kept by
/// the same heartbeat, may have too). The places of the waits that do not poll are kept by the session's heartbeat
/// alone. Any getter can take any item, so a queue's getters take turns (<see cref="Polling.ByTurns"/>): a poll is due
/// a poll interval after the last look any of them made (a call that looked for items: counted from when it was sent),
/// and the getter whose timer finds it due first takes the turn; the others wait for that turn's look, for at most a
/// poll interval (a call held up at the server does not hold up the next turn). A getter that leaves holding a turn
/// it has not used (cancelled while its call waited for a connection) signals the key, so that the next getter looks
/// at once (<see cref="Waiter.Dispose"/>). (A getter that takes all it asked for signals the next, as more may be
/// there.) A signal wakes every join, so
/// every join polls (<see cref="Polling.Each"/>). So hundreds of waits on one lock, or consumers of one queue, in one
/// process make one poll per interval, not hundreds.</para>
/// </remarks>
internal sealed partial class WakeSignals
{
    /// <summary>First in line first: by rank (a permit wait's ticket), then in the order the waits entered.</summary>
    private static readonly Comparison<Waiter> s_byPlace =
        static (a, b) => a.Rank != b.Rank ? a.Rank.CompareTo(b.Rank) : a.Order.CompareTo(b.Order);

    private readonly Lock _sync = new();

    /// <summary>The keys someone waits on, each with its waits; a key leaves when its last wait does.</summary>
    private readonly Dictionary<string, Line> _entries = new(StringComparer.Ordinal);

    /// <summary>The clock of <see cref="Waiter.UntilTurn"/>.</summary>
    private readonly TimeProvider _time;

    private long _entered;

    /// <summary>Creates the wake-ups of a coordinator whose clock is <paramref name="time"/>.</summary>
    public WakeSignals(TimeProvider time)
    {
        _time = time;
    }

    /// <summary>How the waits of one key in a process share the polling between signals (see the remarks).</summary>
    public enum Polling
    {
        /// <summary>Each wait polls on its own (joins: a signal wakes every one of them).</summary>
        Each,

        /// <summary>The waits take turns, one poll per interval among them (gets: any getter can take any item).</summary>
        ByTurns,

        /// <summary>The first wake limit in line poll, by the ticket of their place (permit waits: served in line).</summary>
        FirstInLine,
    }

    /// <summary>Registers a wait on <paramref name="key"/>, of which one signal wakes at most
    /// <paramref name="wakeLimit"/>, polling as <paramref name="polling"/> says (the same for every wait on the key);
    /// <see cref="Waiter.Dispose"/> when the wait ends.</summary>
    public Waiter Enter(string key, int wakeLimit, Polling polling)
    {
        lock (_sync)
        {
            if (!_entries.TryGetValue(key, out Line? waiters))
            {
                _entries.Add(key, waiters = []);
            }

            var waiter = new Waiter(this, key, wakeLimit, ++_entered, polling);
            waiters.Add(waiter);
            return waiter;
        }
    }

    /// <summary>Wakes the waits on <paramref name="key"/> that may go ahead now (see the remarks).</summary>
    public void Signal(string key)
    {
        List<TaskCompletionSource>? fired = null;
        lock (_sync)
        {
            if (_entries.TryGetValue(key, out Line? waiters))
            {
                int limit = 0;
                var line = new List<Waiter>(waiters.Count);
                foreach (Waiter waiter in waiters)
                {
                    limit = Math.Max(limit, waiter.WakeLimit);
                    if (!waiter.IsWoken)
                    {
                        line.Add(waiter);
                    }
                }

                if (line.Count > limit)
                {
                    line.Sort(s_byPlace);
                    for (int i = limit; i < line.Count; i++)
                    {
                        line[i].PassedOverWithoutRank = line[i].InLine && line[i].Rank == long.MaxValue;
                    }

                    line.RemoveRange(limit, line.Count - limit);
                }

                foreach (Waiter waiter in line)
                {
                    (fired ??= []).Add(waiter.Signal);
                    waiter.IsWoken = true;
                }
            }
        }

        Fire(fired);
    }

    /// <summary>The ranks of the waits on <paramref name="key"/> (<see cref="long.MaxValue"/> for a wait without a
    /// ticket), for tests.</summary>
    internal long[] RanksOf(string key)
    {
        lock (_sync)
        {
            return _entries.TryGetValue(key, out Line? waiters) ? [.. waiters.Select(static w => w.Rank)] : [];
        }
    }

    /// <summary>The number of keys waited on, for tests.</summary>
    public int Count
    {
        get
        {
            lock (_sync)
            {
                return _entries.Count;
            }
        }
    }

    private static void Fire(List<TaskCompletionSource>? fired)
    {
        foreach (TaskCompletionSource signal in fired ?? [])
        {
            signal.TrySetResult();
        }
    }

    /// <summary>
    /// After a wait left the key's line, or queued again at its back: the waits that sleep without polling and are now
    /// among the first wake limit in line poll from now on. With <paramref name="askNow"/> (the wait ahead queued again:
    /// its place had expired, and theirs, kept by the same heartbeat, may have too) they are also woken to ask the server
    /// at once, so that each, finding its place gone, queues again in turn and passes the wake on. Under the lock;
    /// returns the tasks to complete once it is released.
    /// </summary>
    private static List<TaskCompletionSource>? PromoteNewlyFirst(List<Waiter> waiters, bool askNow)
    {
        List<TaskCompletionSource>? promoted = null;
        foreach (Waiter waiter in waiters)
        {
            if (waiter.Promotion is { } promotion && waiter.IsAmongFirst(waiters))
            {
                waiter.Promotion = null;
                (promoted ??= []).Add(promotion);
                if (askNow && !waiter.IsWoken)
                {
                    waiter.IsWoken = true;
                    promoted.Add(waiter.Signal);
                }
            }
        }

        return promoted;
    }

    /// <summary>The waits on one key, in the order they entered, and the turns of <see cref="Polling.ByTurns"/>
    /// (timestamps of the owner's clock). Guarded by the owner's lock.</summary>
    private sealed class Line : List<Waiter>
    {
        /// <summary>When the last call that looked was sent: the next turn is due a poll interval later.</summary>
        public long LastLook;

        /// <summary>The wait that took the turn and has not looked yet, and when it took it; null when none.</summary>
        public Waiter? TurnTaker;

        public long TurnTakenAt;
    }
}
