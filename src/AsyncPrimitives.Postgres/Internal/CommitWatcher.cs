namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// Wakes the getters of items put inside a caller's transaction once that transaction commits. The put cannot send the
/// notification itself: inside the transaction it would take the server-wide NOTIFY lock at commit (see
/// <see cref="Notifier"/>), and outside it the items are not visible yet. So the coordinator asks the server for the
/// transaction's status (<c>txid_status</c>), soon and then less and less often up to the poll interval, and signals
/// the queue when it has committed (nothing when it rolled back).
/// </summary>
internal sealed class CommitWatcher
{
    private static readonly TimeSpan s_firstCheck = TimeSpan.FromMilliseconds(2);

    private readonly Database _database;
    private readonly WakeSignals _signals;
    private readonly Notifier _notifier;
    private readonly TimeProvider _time;
    private readonly TimeSpan _longestWait;
    private readonly Lock _sync = new();

    /// <summary>Cancelled by <see cref="StopAsync"/> once <see cref="_stopped"/> is set: ends a check in flight.</summary>
    private readonly CancellationTokenSource _stop = new();

    /// <summary>Transactions not known to have ended, with the wake key of each; guarded by <see cref="_sync"/>.</summary>
    private readonly Dictionary<long, HashSet<string>> _pending = [];

    /// <summary>Whether the watch loop runs; guarded by <see cref="_sync"/>.</summary>
    private bool _watching;

    /// <summary>Whether <see cref="StopAsync"/> was called; guarded by <see cref="_sync"/>.</summary>
    private bool _stopped;

    /// <summary>The running watch loop (completed when none runs); guarded by <see cref="_sync"/>.</summary>
    private Task _loop = Task.CompletedTask;

    /// <summary>The next check comes this long after the last; reset to the shortest when a transaction is added.</summary>
    private TimeSpan _interval = s_firstCheck;

    /// <summary>Ends the loop's wait for its next check: cancelled by <see cref="Watch"/>, whose transaction is to be
    /// checked sooner than that wait would end, or by <see cref="StopAsync"/>. Guarded by <see cref="_sync"/>; never
    /// disposed (it holds no timer).</summary>
    private CancellationTokenSource? _wait;

    public CommitWatcher(Database database, WakeSignals signals, Notifier notifier, TimeProvider time, TimeSpan longestWait)
    {
        _database = database;
        _signals = signals;
        _notifier = notifier;
        _time = time;
        _longestWait = longestWait;
    }

    /// <summary>Wakes <paramref name="key"/> when the transaction <paramref name="transactionId"/> commits.</summary>
    public void Watch(long transactionId, string key)
    {
        CancellationTokenSource? sooner = null;
        lock (_sync)
        {
            if (_stopped)
            {
                // The coordinator is disposed: the getters of other processes find the items at their next poll.
                return;
            }

            if (!_pending.TryGetValue(transactionId, out HashSet<string>? keys))
            {
                _pending.Add(transactionId, keys = new HashSet<string>(StringComparer.Ordinal));
            }

            keys.Add(key);
            _interval = s_firstCheck;
            if (_watching)
            {
                // The loop may be waiting long for an older transaction: it starts again from the first check.
                sooner = _wait;
                _wait = null;
            }
            else
            {
                // Started under the lock, so that StopAsync finds it (this only queues the loop, which takes the lock first).
                _watching = true;
                _loop = Background.Run(WatchAsync);
            }
        }

        sooner?.Cancel();
    }

    /// <summary>Stops watching (the coordinator is disposed) and waits for the loop to end: after it, nothing of the
    /// watcher runs or uses the data source. Transactions still open are no longer watched.</summary>
    public async Task StopAsync()
    {
        Task loop;
        CancellationTokenSource? wait;
        lock (_sync)
        {
            if (_stopped)
            {
                return;
            }

            _stopped = true;
            wait = _wait;
            _wait = null;
            loop = _loop;
        }

        // Outside the lock: cancelling runs the registrations of a check in flight.
        _stop.Cancel();
        wait?.Cancel();
        await loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    private async Task WatchAsync()
    {
        while (true)
        {
            long[] ids;
            TimeSpan interval;
            CancellationToken wait;
            lock (_sync)
            {
                if (_pending.Count == 0 || _stopped)
                {
                    _watching = false;
                    return;
                }

                interval = _interval;
                _interval = _interval * 2 < _longestWait ? _interval * 2 : _longestWait;
                _wait = new CancellationTokenSource();
                wait = _wait.Token;
            }

            Task delay;
            try
            {
                delay = Task.Delay(interval, _time, wait);
            }
            catch (Exception)
            {
                // The clock (user code) could not create the timer: this loop ends, and the next put in a caller's
                // transaction starts another, which checks the ones pending here too; meanwhile the getters find the
                // items at their next poll.
                lock (_sync)
                {
                    _watching = false;
                }

                return;
            }

            // Ended early by a new transaction; resumed on the pool, never inline in the put that ended it.
            await delay.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing | ConfigureAwaitOptions.ForceYielding);
            lock (_sync)
            {
                ids = [.. _pending.Keys];
            }

            List<(long Id, string? Status)> statuses;
            try
            {
                statuses = await _database.QueryAllAsync(
                    "SELECT x, txid_status(x) FROM unnest($1::bigint[]) AS x",
                    [Database.Parameter(ids)],
                    static r => (r.GetInt64(0), r.IsDBNull(1) ? null : r.GetString(1)),
                    Database.Retry.Always,
                    _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                continue; // stopped: ends at the top
            }
            catch (PostgresCoordinationException)
            {
                // The server cannot be reached: ask again later (the getters also poll).
                continue;
            }

            var committed = new List<string>();
            lock (_sync)
            {
                foreach ((long id, string? status) in statuses)
                {
                    if (status == "in progress" || !_pending.Remove(id, out HashSet<string>? keys))
                    {
                        continue;
                    }

                    // Rolled back: nothing to wake. Unknown (null: too old to tell): wake, to be safe.
                    if (status != "aborted")
                    {
                        committed.AddRange(keys);
                    }
                }
            }

            foreach (string key in committed.Distinct(StringComparer.Ordinal))
            {
                _signals.Signal(key);
                _notifier.Request(key);
            }
        }
    }
}
