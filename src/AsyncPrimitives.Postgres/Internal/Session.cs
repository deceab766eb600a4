using System.Globalization;
using Npgsql;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// One session of a coordinator: its LISTEN connection, and what it holds on the server while that connection lives.
/// The connection holds a session-level advisory lock on a random 64-bit <see cref="Key"/>, which names the session on
/// the server; every permit, place in line and leased item taken under it records that key, and counts for the others
/// only while the lock is held, that is while the backend exists (or, failing that, until its lease expires).
/// </summary>
/// <remarks>
/// The session ends when its connection fails (the backend was terminated, the server restarted, a ping got no answer)
/// or the coordinator is disposed. Ending it fails the waits in progress (<see cref="Ended"/>), marks every lease
/// taken under it lost, and asks the others to look again (their permits may be free now). The coordinator then opens
/// a new session for the next call.
/// </remarks>
internal sealed partial class Session
{
    /// <summary>How long closing the connection waits for the server to answer UNLISTEN.</summary>
    private static readonly TimeSpan s_closeTimeout = TimeSpan.FromSeconds(5);

    private readonly NpgsqlConnection _connection;
    private readonly PostgresCoordinator _coordinator;

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

    private Session(NpgsqlConnection connection, int pid, long key, PostgresCoordinator coordinator)
    {
        _connection = connection;
        Pid = pid;
        Key = key;
        _coordinator = coordinator;
    }

    /// <summary>The process id of the session's backend.</summary>
    public int Pid { get; }

    /// <summary>The session's name on the server: the key of the advisory lock its connection holds while it lives.</summary>
    public long Key { get; }

    /// <summary>The coordinator's clock.</summary>
    public TimeProvider Time => _coordinator.Time;

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

    /// <summary>Opens a session of <paramref name="coordinator"/>: a connection of its data source that LISTENs on the
    /// channel. <paramref name="closing"/> (the coordinator's disposal) cancels only the opening of the connection.</summary>
    public static async Task<Session> OpenAsync(PostgresCoordinator coordinator, CancellationToken closing)
    {
        Database database = coordinator.Database;
        NpgsqlConnection connection = await database.OpenAsync(closing).ConfigureAwait(false);
        try
        {
            Session session;
            // Between notifications the connection is idle by design (pinged every LeaseDuration / 3): a database's
            // or role's idle_session_timeout (PostgreSQL 14+) must not end it, and with it the process's leases.
            string listen = (ExemptFromIdleTimeout(connection) ? "SET idle_session_timeout = 0; " : "") +
                $"LISTEN \"{database.Channel}\"; ";
            while (true)
            {
                // A random key; if another session holds it already (a chance of one in 2^64 per pair), draw again.
                long key = Random.Shared.NextInt64(long.MinValue, long.MaxValue);
                (int Pid, bool Locked) name = await database.QueryAsync(
                    connection,
                    prepare: false,
                    listen + string.Create(CultureInfo.InvariantCulture, $"SELECT pg_backend_pid(), pg_try_advisory_lock({key})"),
                    [],
                    static r => (r.GetInt32(0), r.GetBoolean(1)),
                    CancellationToken.None).ConfigureAwait(false);
                if (name.Locked)
                {
                    session = new Session(connection, name.Pid, key, coordinator);
                    break;
                }

                listen = "";
            }

            WakeSignals signals = coordinator.Signals;
            Notifier notifier = coordinator.Notifier;
            connection.Notification += (_, e) =>
            {
                if (notifier.KeyOf(e.Payload) is { } key)
                {
                    signals.Signal(key);
                }
            };
            session._listening = Background.Run(session.ListenAsync);
            session._heartbeat = Background.Run(session.HeartbeatAsync);
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
    public void End(Exception reason) => AskWaitsToLook(EndHere(reason));

    /// <summary>Ends the session in this process (once; see <see cref="End"/>); returns the wake keys of the leases
    /// lost and of the places in line (a release may have granted a place a permit not claimed yet), and the join keys
    /// of the deliveries' queues, for the others to be asked to look again once the server has freed them. The waits in
    /// progress fail now, or (<paramref name="failWaits"/> false) when the caller cancels <see cref="_ended"/>.</summary>
    private string[] EndHere(Exception reason, bool failWaits = true)
    {
        LeaseTracker[] lost;
        WaitPlace[] places;
        lock (_sync)
        {
            if (_endReason is not null)
            {
                return [];
            }

            _endReason = reason;
            lost = [.. _leases];
            places = [.. _places];
            _leases.Clear();
            _places.Clear();
        }

        if (failWaits)
        {
            _ended.Cancel();
        }

        _stop.Cancel();
        foreach (LeaseTracker lease in lost)
        {
            lease.MarkLost();
        }

        // A delivery given back on its last attempt goes to the dead letters, which may leave nothing unfinished.
        return
        [
            .. lost.Select(l => l.WakeKey)
                .Concat(lost.Where(l => l.IsDelivery).Select(l => l.JoinKey))
                .Concat(places.Select(p => p.WakeKey))
                .Distinct(StringComparer.Ordinal),
        ];
    }

    /// <summary>Asks the waits on <paramref name="keys"/> to look again, once the server has freed what they may take: the
    /// other processes' (a notification), and this coordinator's own under its next session (it ignores its own
    /// notifications).</summary>
    private void AskWaitsToLook(string[] keys)
    {
        foreach (string key in keys)
        {
            _coordinator.Signals.Signal(key);
            _coordinator.Notifier.Request(key);
        }
    }

    /// <summary>Ends the session and waits for its loops to finish (the connection is closed then).</summary>
    public async Task StopAsync(Exception reason)
    {
        End(reason);
        await _listening.ConfigureAwait(false);
        await _heartbeat.ConfigureAwait(false);
        await _givingBack.ConfigureAwait(false);
    }

    /// <summary>
    /// Ends the session for good (its coordinator is disposed): the leases are lost here first, then the server frees
    /// what the session held, so nothing here relies on a permit that the others may already have; then the session
    /// stops. Never throws for a server that cannot be reached: closing the connection frees the rows too.
    /// </summary>
    public async Task CloseAsync(Exception reason)
    {
        // If this cannot reach the server, the session's connection, closed below, frees its rows too.
        await EndThenFreeAsync(reason, _coordinator.CleanupTimeout, failWaitsFirst: true).ConfigureAwait(false);
        await StopAsync(reason).ConfigureAwait(false);
    }

    /// <summary>Frees what the session holds on the server (if it can be reached within <paramref name="timeout"/>).</summary>
    private ValueTask<(bool Ran, bool Row)> EndOnServerAsync(TimeSpan timeout) =>
        _coordinator.Database.RunCleanupAsync(
            "SELECT __schema__.end_session($1, $2)",
            [Database.Parameter(_coordinator.Owner), Database.Parameter(Key)],
            static _ => true,
            timeout);

    private async Task ListenAsync()
    {
        TimeSpan pingInterval = _coordinator.LeaseDuration / 3;
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
            await CloseConnectionAsync(unfinished).ConfigureAwait(false);
        }

        if (failure is not null)
        {
            // Whatever failed, the other idle connections of the pool likely failed with it (a restart, the network).
            // The server may still hold the session, though: a connection that stopped answering (a ping that timed
            // out) keeps its backend, and the advisory lock that keeps the session alive, until it is closed. So the
            // leases are lost here first, then what the session holds there is freed (as a closing coordinator frees
            // it), and only then do the waits in progress fail: a place left would take the next permit released, and
            // keep it until it expired, after its wait had thrown.
            _coordinator.Database.ClearConnections();
            await EndThenFreeAsync(
                new PostgresCoordinationException(
                    $"The coordinator's LISTEN connection (backend {Pid}) failed: waits in progress fail, leases held are " +
                    "lost, and the coordinator reconnects on the next call.", failure),
                s_closeTimeout).ConfigureAwait(false);
        }
    }

    /// <summary>Ends the session here while the server may still hold it (its coordinator is disposed, or its LISTEN
    /// connection or heartbeat failed): the leases are lost here first, then what the session holds there is freed
    /// (within <paramref name="timeout"/>), and only then do the waits in progress fail (unless
    /// <paramref name="failWaitsFirst"/>: a disposal fails them at once) and the waits on what was freed (this
    /// coordinator's next session's too) look again: one woken before the rows were free would find nothing and sleep to
    /// its next poll.</summary>
    private async Task EndThenFreeAsync(Exception reason, TimeSpan timeout, bool failWaitsFirst = false)
    {
        string[] freed = EndHere(reason, failWaits: failWaitsFirst);
        await EndOnServerAsync(timeout).ConfigureAwait(false);
        _ended.Cancel();
        AskWaitsToLook(freed);
    }

    private async Task PingAsync()
    {
        using var ping = new NpgsqlCommand("SELECT 1", _connection);
        await ping.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
    }

    /// <summary>
    /// Closes the connection: UNLISTEN and the session's advisory lock released first, so it goes back to the pool clean (a broken one is discarded instead).
    /// Nothing here waits on the server for long, and nothing uses Npgsql's cancellation (which blocks a thread while it
    /// tries to reach the server): a statement that does not answer in time is left to finish on its own, and the
    /// connection is closed after it.
    /// </summary>
    private async Task CloseConnectionAsync(Task? unfinished)
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

    /// <summary>Whether the server has <c>idle_session_timeout</c> (PostgreSQL 14+), which the session's connection sets
    /// to 0 while it listens.</summary>
    private static bool ExemptFromIdleTimeout(NpgsqlConnection connection) => connection.PostgreSqlVersion.Major >= 14;

    private async Task UnlistenAsync()
    {
        // The advisory lock too: the data source's pool would release it only when the connection is next used, and
        // until then the others would take the session for alive. The idle timeout back to the data source's.
        string sql = "UNLISTEN *; SELECT pg_advisory_unlock_all()" +
            (ExemptFromIdleTimeout(_connection) ? "; RESET idle_session_timeout" : "");
        using var unlisten = new NpgsqlCommand(sql, _connection);
        await unlisten.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
    }
}
