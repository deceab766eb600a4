namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// The wake-ups of one coordinator, by key (<c>"l:name"</c> for a lock, <c>"s:name"</c> a semaphore, <c>"q:name"</c> a
/// queue's new items, <c>"j:name"</c> its unfinished count reaching zero). A notification from the server, or a release
/// in this process, signals a key; every wait on that key then checks the server again.
/// </summary>
/// <remarks>
/// A wait takes <see cref="Entry.Next"/> <em>before</em> it asks the server, so a signal that arrives while it asks is
/// not missed: the task it then awaits has already completed.
/// </remarks>
internal sealed class WakeSignals
{
    private readonly Lock _sync = new();

    /// <summary>The keys someone waits on, each with its current signal; a key leaves when its last wait does.</summary>
    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    /// <summary>Registers a wait on <paramref name="key"/>; <see cref="Leave"/> when the wait ends.</summary>
    public Entry Enter(string key)
    {
        lock (_sync)
        {
            if (!_entries.TryGetValue(key, out Entry? entry))
            {
                entry = new Entry(this, key);
                _entries.Add(key, entry);
            }

            entry.Users++;
            return entry;
        }
    }

    /// <summary>Ends a wait registered by <see cref="Enter"/>.</summary>
    public void Leave(Entry entry)
    {
        lock (_sync)
        {
            if (--entry.Users == 0)
            {
                _entries.Remove(entry.Key);
            }
        }
    }

    /// <summary>Wakes every wait on <paramref name="key"/>.</summary>
    public void Signal(string key)
    {
        TaskCompletionSource? fired = null;
        lock (_sync)
        {
            if (_entries.TryGetValue(key, out Entry? entry))
            {
                fired = entry.Swap();
            }
        }

        fired?.TrySetResult();
    }

    /// <summary>Wakes every wait (after a reconnection: notifications may have been missed meanwhile).</summary>
    public void SignalAll()
    {
        List<TaskCompletionSource> fired;
        lock (_sync)
        {
            fired = _entries.Values.Select(e => e.Swap()).ToList();
        }

        foreach (TaskCompletionSource signal in fired)
        {
            signal.TrySetResult();
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

    /// <summary>One key's signal, shared by its waits.</summary>
    public sealed class Entry
    {
        private readonly WakeSignals _owner;
        private TaskCompletionSource _signal = NewSignal();

        internal Entry(WakeSignals owner, string key)
        {
            _owner = owner;
            Key = key;
        }

        internal string Key { get; }

        /// <summary>Waits in this process on the key; guarded by the owner's lock.</summary>
        internal int Users { get; set; }

        /// <summary>Completes at the next signal of the key.</summary>
        public Task Next
        {
            get
            {
                lock (_owner._sync)
                {
                    return _signal.Task;
                }
            }
        }

        /// <summary>Replaces the signal and returns the old one for the caller to complete outside the lock.</summary>
        internal TaskCompletionSource Swap()
        {
            TaskCompletionSource old = _signal;
            _signal = NewSignal();
            return old;
        }

        // Continuations run asynchronously: a signal comes from the LISTEN loop, which must not run waits inline.
        private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
