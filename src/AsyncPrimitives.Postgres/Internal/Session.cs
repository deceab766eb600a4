using Npgsql;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// One session of a coordinator: its LISTEN connection, and what it holds on the server while that connection lives.
/// The server names the session by the connection's backend (<see cref="Pid"/>, <see cref="BackendStart"/>); every
/// permit, place in line and leased item taken under it records that name, and counts for the others only while the
/// backend exists (or, failing that, until its lease expires).
/// </summary>
/// <remarks>
/// The session ends when its connection fails (the backend was terminated, the server restarted, a ping got no answer)
/// or the coordinator is disposed. Ending it fails the waits in progress (<see cref="Ended"/>), marks every lease
/// taken under it lost, and asks the others to look again (their permits may be free now). The coordinator then opens
/// a new session for the next call.
/// </remarks>
internal sealed class Session
{
    /// <summary>How long closing the connection waits for the server to answer UNLISTEN.</summary>
    private static readonly TimeSpan s_closeTimeout = TimeSpan.FromSeconds(5);

    private readonly NpgsqlConnection _connection;
    private readonly Database _database;
    private readonly WakeSignals _signals;
    private readonly Notifier _notifier;
    private readonly TimeProvider _time;
    private readonly Func<TimeSpan> _heartbeatInterval;
    private readonly Guid _owner;
    private readonly TimeSpan _waitLease;

    /// <summary>Stops the LISTEN loop and the heartbeat (the session is ending).</summary>
    private readonly CancellationTokenSource _stop = new();

    /// <summary>Cancelled once the session has ended; waits in progress watch it.</summary>
    private readonly CancellationTokenSource _ended = new();

    private readonly Lock _sync = new();

    /// <summary>The leases taken under this session and still held; guarded by <see cref="_sync"/>.</summary>
    private readonly HashSet<LeaseTracker> _leases = [];

    /// <summary>The places in wait lines held by waits in progress; guarded by <see cref="_sync"/>.</summary>
    private readonly HashSet<WaitPlace> _places = [];

    /// <summary>Why the session ended, once it has; guarded by <see cref="_sync"/>.</summary>
    private Exception? _endReason;

    private Task _listening = Task.CompletedTask;
    private Task _heartbeat = Task.CompletedTask;

    private Session(
        NpgsqlConnection connection, int pid, DateTime backendStart, Database database, WakeSignals signals, Notifier notifier,
        TimeProvider time, Guid owner, TimeSpan waitLease, Func<TimeSpan> heartbeatInterval)
    {
        _connection = connection;
        Pid = pid;
        BackendStart = backendStart;
        _database = database;
        _signals = signals;
        _notifier = notifier;
        _time = time;
        _owner = owner;
        _waitLease = waitLease;
        _heartbeatInterval = heartbeatInterval;
    }

    /// <summary>The process id of the session's backend.</summary>
    public int Pid { get; }

    /// <summary>When the session's backend started (with <see cref="Pid"/>, the session's name on the server).</summary>
    public DateTime BackendStart { get; }

    /// <summary>Cancelled once the session has ended.</summary>
    public CancellationToken Ended => _ended.Token;

    public bool IsEnded
    {
        get
        {
            lock (_sync)
            {
                return _endReason is not null;
            }
        }
    }

    /// <summary>A new exception for a call that fails because the session ended: <see cref="ObjectDisposedException"/>
    /// when the coordinator was disposed, otherwise <see cref="PostgresCoordinationException"/> with the cause.</summary>
    public Exception CreateEndException()
    {
        Exception? reason;
        lock (_sync)
        {
            reason = _endReason;
        }

        return reason switch
        {
            ObjectDisposedException disposed => new ObjectDisposedException(disposed.ObjectName, disposed.Message),
            PostgresCoordinationException failed => new PostgresCoordinationException(failed.Message, failed.InnerException),
            _ => new PostgresCoordinationException("The coordinator's session ended.", reason),
        };
    }

    /// <summary>Opens a session: a connection of <paramref name="database"/>'s data source that LISTENs on the channel.</summary>
    public static async Task<Session> OpenAsync(
        Database database, WakeSignals signals, Notifier notifier, TimeProvider time, Guid owner, TimeSpan waitLease,
        Func<TimeSpan> heartbeatInterval, TimeSpan pingInterval)
    {
        NpgsqlConnection connection = await database.OpenAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            (int Pid, DateTime Start) name = await database.QueryAsync(
                connection,
                prepare: false,
                $"LISTEN \"{database.Channel}\"; SELECT pid, backend_start FROM pg_stat_get_activity(pg_backend_pid())",
                [],
                static r => (r.GetInt32(0), r.GetDateTime(1)),
                CancellationToken.None).ConfigureAwait(false);
            var session = new Session(connection, name.Pid, name.Start, database, signals, notifier, time, owner, waitLease, heartbeatInterval);
            connection.Notification += (_, e) => signals.Signal(e.Payload);
            session._listening = Task.Run(() => session.ListenAsync(pingInterval));
            session._heartbeat = Task.Run(session.HeartbeatAsync);
            return session;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Records a lease taken under this session; false (the lease is then lost) when the session has ended.</summary>
    public bool TryAdd(LeaseTracker lease)
    {
        lock (_sync)
        {
            if (_endReason is null && lease.IsHeld)
            {
                _leases.Add(lease);
                return true;
            }
        }

        lease.MarkLost();
        return false;
    }

    public void Remove(LeaseTracker lease)
    {
        lock (_sync)
        {
            _leases.Remove(lease);
        }
    }

    /// <summary>Records a place in a wait line, for the heartbeat to keep; false when the session has ended.</summary>
    public bool TryAdd(WaitPlace place)
    {
        lock (_sync)
        {
            return _endReason is null && _places.Add(place);
        }
    }

    public void Remove(WaitPlace place)
    {
        lock (_sync)
        {
            _places.Remove(place);
        }
    }

    /// <summary>The leases held now, for tests.</summary>
    public int LeaseCount
    {
        get
        {
            lock (_sync)
            {
                return _leases.Count;
            }
        }
    }

    /// <summary>
    /// Ends the session (once): waits in progress fail with <paramref name="reason"/>, leases are lost, the others are
    /// asked to look again, and the LISTEN loop and heartbeat stop (the LISTEN loop closes the connection).
    /// </summary>
    public void End(Exception reason)
    {
        LeaseTracker[] lost;
        lock (_sync)
        {
            if (_endReason is not null)
            {
                return;
            }

            _endReason = reason;
            lost = [.. _leases];
            _leases.Clear();
            _places.Clear();
        }

        _ended.Cancel();
        _stop.Cancel();
        foreach (LeaseTracker lease in lost)
        {
            lease.MarkLost();
            _notifier.Request(lease.WakeKey);
        }
    }

    /// <summary>Ends the session and waits for its loops to finish (the connection is closed then).</summary>
    public async Task StopAsync(Exception reason)
    {
        End(reason);
        await _listening.ConfigureAwait(false);
        await _heartbeat.ConfigureAwait(false);
    }

    private async Task ListenAsync(TimeSpan pingInterval)
    {
        Exception? failure = null;
        Task? unfinished = null;
        try
        {
            while (true)
            {
                // A notification arrives through the Notification event while this waits. With none for a while,
                // a ping proves the connection still works (a silently dropped one would otherwise go unnoticed).
                if (!await _connection.WaitAsync(pingInterval, _stop.Token).ConfigureAwait(false))
                {
                    unfinished = PingAsync();
                    await unfinished.WaitAsync(pingInterval, _stop.Token).ConfigureAwait(false);
                    unfinished = null;
                }
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            // Ended from outside (the coordinator is disposed, or the heartbeat found the session gone).
        }
        catch (Exception e) when (e is NpgsqlException or OperationCanceledException or IOException or TimeoutException)
        {
            failure = e;
        }
        finally
        {
            await CloseAsync(unfinished).ConfigureAwait(false);
        }

        if (failure is not null)
        {
            // Whatever failed, the other idle connections of the pool likely failed with it (a restart, the network).
            _database.Source.Clear();
            End(new PostgresCoordinationException(
                $"The coordinator's LISTEN connection (backend {Pid}) failed: waits in progress fail, leases held are lost, " +
                "and the coordinator reconnects on the next call.", failure));
        }
    }

    private async Task PingAsync()
    {
        using var ping = new NpgsqlCommand("SELECT 1", _connection);
        await ping.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
    }

    /// <summary>
    /// Closes the connection: UNLISTEN first, so it goes back to the pool clean (a broken one is discarded instead).
    /// Nothing here waits on the server for long, and nothing uses Npgsql's cancellation (which blocks a thread while it
    /// tries to reach the server): a statement that does not answer in time is left to finish on its own, and the
    /// connection is closed after it.
    /// </summary>
    private async Task CloseAsync(Task? unfinished)
    {
        if (unfinished is null && _connection.State == System.Data.ConnectionState.Open)
        {
            Task unlisten = UnlistenAsync();
            try
            {
                await unlisten.WaitAsync(s_closeTimeout).ConfigureAwait(false);
            }
            catch (Exception e) when (e is NpgsqlException or IOException or TimeoutException)
            {
                // Broken (Npgsql then discards the connection), or not answering (closed once it has).
                unfinished = unlisten.IsCompleted ? null : unlisten;
            }
        }

        if (unfinished is null)
        {
            await _connection.DisposeAsync().ConfigureAwait(false);
        }
        else
        {
            _ = unfinished.ContinueWith(
                static (task, connection) =>
                {
                    _ = task.Exception; // observed: the connection failed, which the session already reported
                    return ((NpgsqlConnection)connection!).DisposeAsync().AsTask();
                },
                _connection,
                CancellationToken.None,
                TaskContinuationOptions.None,
                TaskScheduler.Default).Unwrap();
        }
    }

    private async Task UnlistenAsync()
    {
        using var unlisten = new NpgsqlCommand("UNLISTEN *", _connection);
        await unlisten.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
    }

    /// <summary>
    /// Renews, every third of the shortest lease in use, the leases and places this session still holds. A lease the
    /// server did not renew is lost (it expired or its session ended); one the heartbeat cannot renew for a whole lease
    /// duration is lost by its own deadline (see <see cref="LeaseTracker"/>). One renewal at a time: a renewal that
    /// does not answer within a beat is left to finish on its own (its answer still counts when it comes), and the
    /// beats skip until it has.
    /// </summary>
    private async Task HeartbeatAsync()
    {
        Task renewal = Task.CompletedTask;
        try
        {
            while (true)
            {
                TimeSpan interval = _heartbeatInterval();
                await Task.Delay(interval, _time, _stop.Token).ConfigureAwait(false);
                if (!renewal.IsCompleted)
                {
                    continue;
                }

                LeaseTracker[] leases;
                long[] tickets;
                lock (_sync)
                {
                    leases = [.. _leases];
                    tickets = [.. _places.Select(p => p.Ticket)];
                }

                if (leases.Length == 0 && tickets.Length == 0)
                {
                    continue;
                }

                renewal = RenewAsync(leases, tickets);
                try
                {
                    await renewal.WaitAsync(interval, _time, _stop.Token).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    // Slow: it goes on in the background.
                }
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            // The session ended.
        }
    }

    /// <summary>One renewal: what the server renewed gets a new deadline, what it did not is lost. Never throws.</summary>
    private async Task RenewAsync(LeaseTracker[] leases, long[] tickets)
    {
        long sentAt = _time.GetTimestamp();
        List<long> rows;
        try
        {
            rows = await _database.QueryAllAsync(
                _database.Renew,
                [
                    Database.Parameter(_owner), Database.Parameter(Pid), Database.Parameter(BackendStart),
                    Database.Parameter(leases.Where(l => l.Kind == LeaseKind.Permit).Select(l => l.Id).ToArray()),
                    Database.Parameter(tickets), Database.Parameter(_waitLease),
                    Database.Parameter(leases.Where(l => l.Kind == LeaseKind.Delivery).Select(l => l.ItemId).ToArray()),
                    Database.Parameter(leases.Where(l => l.Kind == LeaseKind.Delivery).Select(l => l.Id).ToArray()),
                ],
                static r => r.GetInt64(0),
                Database.Retry.Always,
                CancellationToken.None).ConfigureAwait(false);
        }
        catch (PostgresCoordinationException e) when (Database.IsSessionEnded(e))
        {
            End(e);
            return;
        }
        catch (PostgresCoordinationException)
        {
            // Not renewed this time: the next beat tries again. Leases whose deadline passes meanwhile are lost by
            // their own timers.
            return;
        }

        var renewed = new HashSet<long>(rows);
        foreach (LeaseTracker lease in leases)
        {
            if (renewed.Contains(lease.Id))
            {
                lease.Renewed(sentAt);
            }
            else if (lease.IsHeld)
            {
                lease.MarkLost();
            }
        }
    }
}

/// <summary>A wait's place in a wait line (its ticket), kept by the heartbeat while the wait lasts.</summary>
internal sealed class WaitPlace(long ticket)
{
    public long Ticket { get; } = ticket;
}
