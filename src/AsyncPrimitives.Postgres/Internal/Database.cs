using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;
using System.Transactions;
using Npgsql;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// The statements of one schema and how they run: each opens a pooled connection of the coordinator's data source,
/// prepares its statement on that physical connection (a lookup after the first time), runs it and gives the connection
/// back; server and connection failures come out as <see cref="PostgresCoordinationException"/>.
/// </summary>
internal sealed partial class Database
{
    /// <summary>When a call whose connection failed is tried again on a new one.</summary>
    public enum Retry
    {
        /// <summary>Only when the statement certainly did not run: for a call that must not run twice (a put).</summary>
        IfNotRun,

        /// <summary>After any connection failure: for a call that may run twice (a read, a renewal, a release, a
        /// repeated acquire that the server answers with the grant it already made).</summary>
        Always,
    }

    /// <summary>Until when a call's cancellation token may end it.</summary>
    public enum Cancel
    {
        /// <summary>Also while its statement runs: for a call that changes nothing (a read) or whose effect the server
        /// tells a repeat of it (a renewal).</summary>
        Anytime,

        /// <summary>Only until its statement is sent (while it waits for a connection, or before it is tried again): for a
        /// call whose effect its caller must know (a put, a completion, a give-back). Once sent it runs to its answer, so
        /// a cancelled call did not happen.</summary>
        BeforeSending,
    }

    /// <summary>The SQLSTATE the schema's functions raise when the caller's session has ended.</summary>
    public const string SessionEndedState = "AT001";

    /// <summary>The SQLSTATE of a statement the server failed to break a deadlock.</summary>
    private const string DeadlockDetectedState = "40P01";

    /// <summary>The SQLSTATE the queue functions raise when the queue is shut down (and, for a get, nothing waits).</summary>
    public const string QueueShutDownState = "AT002";

    /// <summary>The script's statement that makes the schema (left out when it exists).</summary>
    private const string CreateSchemaStatement = "CREATE SCHEMA IF NOT EXISTS __schema__;";

    /// <summary>What every statement template says where the schema's name goes.</summary>
    private const string SchemaPlaceholder = "__schema__";

    private static readonly Lazy<string> s_script = new(LoadScript);

    private readonly NpgsqlDataSource _source;

    /// <summary>
    /// How many connections the coordinator keeps open between calls (besides its LISTEN connection). A kept connection
    /// skips the reset that the data source's pool sends when a connection is taken again, and keeps its prepared
    /// statements; calls that run at once beyond these take connections from the pool as usual.
    /// </summary>
    public const int MaxKept = 4;

    /// <summary>The connections kept open for the next calls.</summary>
    private readonly ConcurrentStack<NpgsqlConnection> _kept = new();

    /// <summary>About how many connections are in <see cref="_kept"/> (a bound, not an exact count).</summary>
    private int _keptCount;

    /// <summary>How many connections are being opened from the data source's pool now (<see cref="OpenAsync"/>): while
    /// one may be waiting for the pool (full: <c>Max Pool Size</c>), a connection a call is done with goes back to the
    /// pool instead of being kept, or the opening would wait for the pool's timeout beside a connection kept idle.</summary>
    private int _opening;

    /// <summary>Set once the coordinator is disposed: connections are no longer kept.</summary>
    private bool _closed;

    /// <summary>The data source's default isolation level, as far as the calls need to know it (see
    /// <see cref="SetIsolationAsync"/>); learned on the first connection opened for a call.</summary>
    private volatile DefaultIsolation _isolation;

    /// <summary>The statements of this schema, by template (see <see cref="Sql"/>).</summary>
    private readonly ConcurrentDictionary<string, string> _statements = new(StringComparer.Ordinal);

    public Database(NpgsqlDataSource source, string schema)
    {
        _source = source;
        Schema = schema;
    }

    /// <summary>The version of the schema this library installs and expects: its tables, and its functions' names,
    /// parameters and results. A library that changes any of them raises it.</summary>
    public const int Version = 1;

    /// <summary>
    /// The revision of the functions' bodies within <see cref="Version"/>; raised with every change to Schema.sql that
    /// keeps the version (a fix in a function), so that <see cref="InstallAsync"/> replaces older bodies on a schema
    /// already installed. Bodies of one version are interchangeable: an instance of an older revision works with newer
    /// ones. (A test pins the script's hash to this number.)
    /// </summary>
    public const int Revision = 6;

    /// <summary>The first revision whose grants move the token sequence ahead after a crash (see ids_jump).</summary>
    private const int TokensJumpAfterACrashSince = 5;

    public string Schema { get; }

    /// <summary>The schema name as an SQL identifier (quoted: the name may be a keyword).</summary>
    public string Quoted => "\"" + Schema + "\"";

    /// <summary>The LISTEN/NOTIFY channel: the schema name.</summary>
    public string Channel => Schema;

    /// <summary>Whether <paramref name="schema"/> is a name the options accept.</summary>
    public static bool IsValidSchemaName(string? schema) =>
        schema is not null && SchemaName().IsMatch(schema) && !schema.StartsWith("pg_", StringComparison.Ordinal);

    /// <summary>
    /// The statement <paramref name="template"/> for this schema: every <c>__schema__</c> in it replaced by the quoted
    /// schema name. Made once per template; every query method takes templates. The statements live next to the code
    /// that binds their parameters.
    /// </summary>
    public string Sql(string template) =>
        _statements.GetOrAdd(template, static (t, quoted) => t.Replace(SchemaPlaceholder, quoted, StringComparison.Ordinal), Quoted);

    /// <summary>Installs the schema, or brings it up to <see cref="Version"/> and <see cref="Revision"/> (see
    /// <see cref="PostgresCoordinator.EnsureSchemaAsync"/>): in one transaction, under a transaction-level advisory lock.
    /// Never goes back to an older revision, so instances of two releases started in turn do not replace each other's
    /// functions back and forth.</summary>
    public async Task InstallAsync(CancellationToken cancellationToken)
    {
        NpgsqlConnection connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var connectionScope = connection.ConfigureAwait(false);
        try
        {
            NpgsqlTransaction transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using var transactionScope = transaction.ConfigureAwait(false);
            using (var turn = new NpgsqlCommand("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", connection, transaction))
            {
                turn.Parameters.Add(Parameter("AsyncPrimitives.Postgres schema " + Schema));
                await turn.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }

            (int Version, int? Revision) installed = (0, 0);
            using (var version = new NpgsqlCommand("SELECT to_regclass($1) IS NOT NULL", connection, transaction))
            {
                version.Parameters.Add(Parameter(Quoted + ".schema_version"));
                if ((bool)(await version.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!)
                {
                    // The revision read through to_jsonb: a schema installed by a pre-release build has no such column.
                    version.CommandText = Sql(
                        "SELECT v.version, (to_jsonb(v) ->> 'revision')::int FROM __schema__.schema_version v " +
                        "ORDER BY v.version DESC LIMIT 1");
                    version.Parameters.Clear();
                    NpgsqlDataReader row = await version.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                    await using var rowScope = row.ConfigureAwait(false);
                    if (await row.ReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        installed = (row.GetInt32(0), row.IsDBNull(1) ? null : row.GetInt32(1));
                    }
                }
            }

            if (installed.Revision is null)
            {
                throw new PostgresCoordinationException(
                    $"The schema \"{Schema}\" was installed by a pre-release build of AsyncPrimitives.Postgres, whose tables " +
                    $"differ from this version's and cannot be changed in place: drop it (DROP SCHEMA \"{Schema}\" CASCADE, " +
                    "which deletes its queues' items) and call EnsureSchemaAsync again.");
            }

            if (installed.Version > Version)
            {
                throw new PostgresCoordinationException(
                    $"The schema \"{Schema}\" has version {installed.Version}, newer than this library's {Version}: update AsyncPrimitives.Postgres.");
            }

            if (installed.Version < Version || installed.Revision < Revision)
            {
                // Every statement of the script is idempotent: tables and indexes are made if missing, functions replaced.
                // The schema itself is made only when missing: CREATE SCHEMA IF NOT EXISTS asks for CREATE on the
                // database before it looks, which the owner of a schema made for it, or one upgrading it, need not have.
                string script = s_script.Value;
                using (var exists = new NpgsqlCommand("SELECT to_regnamespace($1) IS NOT NULL", connection, transaction))
                {
                    exists.Parameters.Add(Parameter(Quoted));
                    if ((bool)(await exists.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!)
                    {
                        Debug.Assert(script.Contains(CreateSchemaStatement, StringComparison.Ordinal), "The script makes its schema.");
                        script = script.Replace(CreateSchemaStatement, string.Empty, StringComparison.Ordinal);
                    }
                }

                using var install = new NpgsqlCommand(script.Replace(SchemaPlaceholder, Quoted, StringComparison.Ordinal), connection, transaction);
                await install.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                if (installed.Version > 0 && installed.Revision < TokensJumpAfterACrashSince)
                {
                    // The grants of older revisions did not move the sequence ahead after a crash, and one may have
                    // happened since: the sequence moves ahead once now, flushed at commit.
                    using var jump = new NpgsqlCommand(Sql("SELECT __schema__.ids_jump()"), connection, transaction);
                    await jump.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }

                using var record = new NpgsqlCommand(
                    Sql("UPDATE __schema__.schema_version SET revision = $2 WHERE version = $1"), connection, transaction);
                record.Parameters.Add(Parameter(Version));
                record.Parameters.Add(Parameter(Revision));
                await record.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }

            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException e)
        {
            throw Failure(e, "Installing the schema");
        }
    }

    /// <summary>
    /// Opens a pooled connection; <paramref name="cancellationToken"/> cancels only the opening. The connection never
    /// enlists in the caller's ambient transaction (a <see cref="TransactionScope"/>; Npgsql enlists a connection opened
    /// in one unless the connection string says <c>Enlist=false</c>): every call is a transaction of its own, whose
    /// outcome (a put, a grant, a completion) commits whatever the caller's scope does later. Counted as renting while
    /// it waits (see <see cref="GiveBackAsync"/>), and the connections kept here go back to the pool first: the
    /// session's LISTEN connection and the schema's installation open theirs here too, and must not wait for a pool
    /// filled by connections kept idle.
    /// </summary>
    public async ValueTask<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken)
    {
        using TransactionScope? noAmbient = Transaction.Current is null
            ? null
            : new TransactionScope(TransactionScopeOption.Suppress, TransactionScopeAsyncFlowOption.Enabled);
        Interlocked.Increment(ref _opening);
        try
        {
            // The pool may be full with the connections kept here: they go back to it first (none are kept when a call
            // of RentAsync gets here, unless one was given back meanwhile).
            while (_kept.TryPop(out NpgsqlConnection? kept))
            {
                Interlocked.Decrement(ref _keptCount);
                await ReturnToPoolAsync(kept).ConfigureAwait(false);
            }

            return await _source.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException e)
        {
            throw Failure(e, "Opening a connection");
        }
        finally
        {
            Interlocked.Decrement(ref _opening);
        }
    }

    /// <summary>
    /// Runs the statement template <paramref name="sql"/> (see <see cref="Sql"/>) with <paramref name="parameters"/> on a
    /// pooled connection and reads its first row with <paramref name="read"/> (default when there is none).
    /// <paramref name="cancellationToken"/> cancels the call, until its statement is sent when <paramref name="cancel"/>
    /// says so (a call whose effect its caller must know, or whose answer must be read whatever happens: one that grants
    /// something, which is then handed over or given back). <paramref name="sending"/>, when given, is called as the
    /// statement is sent (after the connection is rented), on each attempt: what the statement grants counts from then.
    /// </summary>
    /// <remarks>
    /// <paramref name="retry"/> says when the call is tried again on a new connection, after the one it ran on failed.
    /// After a server restart or a network failure, the idle connections in the pool are dead, and each fails the next
    /// statement sent on it. So a failed connection clears the pool's idle connections, and the call is tried once more
    /// as <paramref name="retry"/> allows. A call the server failed to break a deadlock (its statement rolled back
    /// whole) is tried once more whatever <paramref name="retry"/> says, after a short pause (see
    /// <see cref="DeadlockRetryDelay"/>).
    /// </remarks>
    public ValueTask<T?> QueryAsync<T>(
        string sql, NpgsqlParameter[] parameters, Func<NpgsqlDataReader, T> read, Retry retry, CancellationToken cancellationToken,
        Cancel cancel = Cancel.Anytime, Action? sending = null) =>
        WithConnectionAsync(sql, parameters, (reader, ct) => FirstRowAsync(reader, read, ct), retry, cancellationToken, cancel, sending);

    /// <summary>Runs <paramref name="sql"/> and reads every row with <paramref name="read"/> (see
    /// <see cref="QueryAsync{T}(string, NpgsqlParameter[], Func{NpgsqlDataReader, T}, Retry, CancellationToken, Cancel, Action?)"/>).</summary>
    public async ValueTask<List<T>> QueryAllAsync<T>(
        string sql, NpgsqlParameter[] parameters, Func<NpgsqlDataReader, T> read, Retry retry, CancellationToken cancellationToken,
        Cancel cancel = Cancel.Anytime, Action? sending = null) =>
        (await WithConnectionAsync(sql, parameters, (reader, ct) => AllRowsAsync(reader, read, ct), retry, cancellationToken, cancel, sending)
            .ConfigureAwait(false))!;

    /// <summary>
    /// Runs a call that gives something back on the server (a permit, a place in line, a join, what a session holds),
    /// and never throws: it is bounded by <paramref name="timeout"/> and tried again after a connection failure, and
    /// when the server cannot be reached in that time, what it gives back is no longer renewed and expires, or goes with
    /// its session. Returns whether the call ran, and its first row read with <paramref name="read"/>.
    /// </summary>
    public async ValueTask<(bool Ran, T? Row)> RunCleanupAsync<T>(
        string sql, NpgsqlParameter[] parameters, Func<NpgsqlDataReader, T> read, TimeSpan timeout, Action? sending = null)
    {
        try
        {
            using var bound = new CancellationTokenSource(timeout);
            return (true, await QueryAsync(sql, parameters, read, Retry.Always, bound.Token, sending: sending).ConfigureAwait(false));
        }
        catch (Exception e) when (e is PostgresCoordinationException or OperationCanceledException)
        {
            return (false, default);
        }
    }

    /// <summary>Runs <paramref name="sql"/> on <paramref name="connection"/> (see
    /// <see cref="QueryAsync{T}(string, NpgsqlParameter[], Func{NpgsqlDataReader, T}, Retry, CancellationToken, Cancel, Action?)"/>);
    /// prepares it only on our own connections, and never tries again.</summary>
    public async ValueTask<T?> QueryAsync<T>(
        NpgsqlConnection connection, bool prepare, string sql, NpgsqlParameter[] parameters, Func<NpgsqlDataReader, T> read,
        CancellationToken cancellationToken, NpgsqlTransaction? transaction = null)
    {
        try
        {
            return await RunAsync(connection, prepare, sql, parameters, (reader, ct) => FirstRowAsync(reader, read, ct), cancellationToken, transaction)
                .ConfigureAwait(false);
        }
        catch (NpgsqlException e)
        {
            throw Failure(e, "The call");
        }
    }

    private async ValueTask<T?> WithConnectionAsync<T>(
        string sql, NpgsqlParameter[] parameters, Func<NpgsqlDataReader, CancellationToken, ValueTask<T?>> consume,
        Retry retry, CancellationToken cancellationToken, Cancel cancel, Action? sending)
    {
        CancellationToken whileRunning = cancel == Cancel.Anytime ? cancellationToken : CancellationToken.None;
        bool mayHaveRun = false;
        bool deadlocked = false;
        for (int attempt = 0; ; attempt++)
        {
            if (deadlocked)
            {
                // Not at once: the transaction the server let go on was only woken, and has yet to take the rows this
                // call's rollback released. A retry sent right away can take them first (a row lock does not queue
                // behind a woken waiter) and then wait for the rest, as before: the same deadlock, and this call its
                // victim again. The call has not run, so a cancellation meanwhile ends it.
                deadlocked = false;
                await Task.Delay(DeadlockRetryDelay(), cancellationToken).ConfigureAwait(false);
            }

            // Tried again after its answer was lost with the connection, a call may have run already: if it may be
            // cancelled only until it is sent, it is no longer cancelled at all.
            CancellationToken beforeSending = mayHaveRun && cancel == Cancel.BeforeSending ? CancellationToken.None : cancellationToken;
            (NpgsqlConnection connection, bool opened) = await RentAsync(beforeSending).ConfigureAwait(false);
            bool sent = false;
            try
            {
                if (opened)
                {
                    await SetIsolationAsync(connection).ConfigureAwait(false);
                }

                beforeSending.ThrowIfCancellationRequested();
                sending?.Invoke();
                sent = true;
                return await RunAsync(connection, prepare: true, sql, parameters, consume, whileRunning).ConfigureAwait(false);
            }
            catch (PostgresException e) when (e.SqlState == DeadlockDetectedState && attempt == 0 && !cancellationToken.IsCancellationRequested)
            {
                // The server broke a deadlock by failing this call's statement (its own transaction): rolled back whole,
                // as if it never ran, so it is tried again, after a pause that lets the other side go ahead first. The
                // schema's own statements lock in one order; this is for a transaction of the caller's holding the same rows.
                deadlocked = true;
            }
            catch (NpgsqlException e) when (IsConnectionFailure(e, connection))
            {
                ClearConnections();
                // A failure before the statement was sent, or a termination error answering it, means it never ran; any other
                // failure leaves that open.
                bool ran = sent && e is not PostgresException;
                mayHaveRun |= ran;
                if (attempt > 0 || cancellationToken.IsCancellationRequested || (ran && retry == Retry.IfNotRun))
                {
                    throw Failure(e, "The call");
                }
            }
            catch (NpgsqlException e)
            {
                throw Failure(e, "The call");
            }
            finally
            {
                // Kept for later calls only once it is prepared for them.
                await (sent ? GiveBackAsync(connection) : ReturnToPoolAsync(connection)).ConfigureAwait(false);
            }
        }
    }

    /// <summary>How long a call the server failed to break a deadlock waits before it is tried again: long enough for
    /// the transaction woken by its rollback to be scheduled and take its rows on a loaded machine (tens of
    /// milliseconds), a small part of the <c>deadlock_timeout</c> (1 s by default) the call has already waited; jittered,
    /// so that calls failed together do not come back together. Real time (not the coordinator's clock): it waits for
    /// the server's scheduling, which a test clock does not drive.</summary>
    private static TimeSpan DeadlockRetryDelay() => TimeSpan.FromMilliseconds(100 + Random.Shared.Next(100));

    /// <summary>A connection for one call: a kept one, or a new one from the data source (<c>Opened</c>: not yet
    /// prepared by <see cref="SetIsolationAsync"/>).</summary>
    private async ValueTask<(NpgsqlConnection Connection, bool Opened)> RentAsync(CancellationToken cancellationToken)
    {
        while (_kept.TryPop(out NpgsqlConnection? kept))
        {
            Interlocked.Decrement(ref _keptCount);
            if (kept.State == System.Data.ConnectionState.Open)
            {
                return (kept, false);
            }

            await kept.DisposeAsync().ConfigureAwait(false);
        }

        return (await OpenAsync(cancellationToken).ConfigureAwait(false), true);
    }

    /// <summary>
    /// Makes a connection just opened for calls run each of them at READ COMMITTED, the level every function of the
    /// schema is written for: each statement inside it sees what committed before it (a permit function reads the line
    /// after it has waited for the set's turn). On a data source whose connections start at another default (a database
    /// or role with <c>default_transaction_isolation</c> set to <c>serializable</c> or <c>repeatable read</c>), the
    /// session's default is set to READ COMMITTED here and set back by <see cref="ReturnToPoolAsync"/> before
    /// the connection goes back to the pool. With the usual default this costs one query on the first connection only.
    /// Not cancellable (one short query).
    /// </summary>
    private async ValueTask SetIsolationAsync(NpgsqlConnection connection)
    {
        if (_isolation == DefaultIsolation.Unknown)
        {
            using var show = new NpgsqlCommand("SELECT current_setting('default_transaction_isolation')", connection);
            string level = (string)(await show.ExecuteScalarAsync(CancellationToken.None).ConfigureAwait(false))!;
            _isolation = level == "read committed" ? DefaultIsolation.ReadCommitted : DefaultIsolation.Other;
        }

        if (_isolation == DefaultIsolation.Other)
        {
            using var set = new NpgsqlCommand("SET default_transaction_isolation = 'read committed'", connection);
            await set.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>Gives a connection back to the data source's pool, with its session's default isolation as the data
    /// source set it (see <see cref="SetIsolationAsync"/>).</summary>
    private async ValueTask ReturnToPoolAsync(NpgsqlConnection connection)
    {
        if (_isolation == DefaultIsolation.Other && connection.State == System.Data.ConnectionState.Open)
        {
            try
            {
                using var reset = new NpgsqlCommand("RESET default_transaction_isolation", connection);
                await reset.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
            }
            catch (NpgsqlException)
            {
                // Only a failed connection fails a RESET (calls never leave a transaction open), and a broken connection
                // is closed, not pooled: nothing of this session reaches another user of the pool.
            }
        }

        await connection.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>What <see cref="_isolation"/> knows.</summary>
    private enum DefaultIsolation
    {
        Unknown,
        ReadCommitted,
        Other,
    }

    /// <summary>Keeps a connection after its call, open, for the next one (up to <see cref="MaxKept"/>); closes it
    /// (back to the data source's pool) otherwise: when it is no longer open, or while a connection is being opened from
    /// the pool (it may be waiting for one, which a kept connection never reaches).</summary>
    private ValueTask GiveBackAsync(NpgsqlConnection connection)
    {
        if (connection.State == System.Data.ConnectionState.Open && !Volatile.Read(ref _closed) && Volatile.Read(ref _opening) == 0)
        {
            if (Interlocked.Increment(ref _keptCount) <= MaxKept)
            {
                _kept.Push(connection);
                if (Volatile.Read(ref _closed))
                {
                    ClearConnections(); // CloseAsync ran meanwhile and may have missed it
                }
                else if (Volatile.Read(ref _opening) > 0 && _kept.TryPop(out NpgsqlConnection? unused))
                {
                    // An opening began as this one was kept, and may have found none kept to give back: the pool gets one.
                    Interlocked.Decrement(ref _keptCount);
                    return ReturnToPoolAsync(unused);
                }

                return default;
            }

            Interlocked.Decrement(ref _keptCount);
        }

        return ReturnToPoolAsync(connection);
    }

    /// <summary>
    /// After a connection failed: the others likely failed with it (a restart, the network), so the data source's idle
    /// connections are cleared and the kept ones closed; the next calls open new ones.
    /// </summary>
    public void ClearConnections()
    {
        _source.Clear();
        while (_kept.TryPop(out NpgsqlConnection? kept))
        {
            Interlocked.Decrement(ref _keptCount);
            _ = kept.DisposeAsync().AsTask(); // closing a broken connection does not wait on the server
        }
    }

    /// <summary>Closes the kept connections for good (the coordinator is disposed); later calls close theirs after use.</summary>
    public async Task CloseAsync()
    {
        Volatile.Write(ref _closed, true);
        while (_kept.TryPop(out NpgsqlConnection? kept))
        {
            Interlocked.Decrement(ref _keptCount);
            await ReturnToPoolAsync(kept).ConfigureAwait(false);
        }
    }

    /// <summary>Whether the call failed because its connection did (not because of the statement). The server ends a
    /// session with an error that then answers the next statement, which never runs: a shutdown or an administrator
    /// (57P01), a crash (57P02), a server not accepting connections yet (57P03), or <c>idle_session_timeout</c> (57P05)
    /// ending a connection that waited in the pool or among the kept ones.</summary>
    private static bool IsConnectionFailure(NpgsqlException exception, NpgsqlConnection connection) =>
        exception is PostgresException { SqlState: "57P01" or "57P02" or "57P03" or "57P05" }
        || (exception is not PostgresException && connection.State is System.Data.ConnectionState.Broken or System.Data.ConnectionState.Closed);

    private async ValueTask<T?> RunAsync<T>(
        NpgsqlConnection connection, bool prepare, string sql, NpgsqlParameter[] parameters,
        Func<NpgsqlDataReader, CancellationToken, ValueTask<T?>> consume, CancellationToken cancellationToken,
        NpgsqlTransaction? transaction = null)
    {
        using var command = new NpgsqlCommand(Sql(sql), connection, transaction);
        command.Parameters.AddRange(parameters);
        try
        {
            if (prepare)
            {
                await command.PrepareAsync(cancellationToken).ConfigureAwait(false);
            }

            NpgsqlDataReader reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using var readerScope = reader.ConfigureAwait(false);
            return await consume(reader, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            command.Parameters.Clear(); // a parameter belongs to one command at a time; a retry uses it again
        }
    }

    private static async ValueTask<T?> FirstRowAsync<T>(NpgsqlDataReader reader, Func<NpgsqlDataReader, T> read, CancellationToken cancellationToken) =>
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? read(reader) : default;

    private static async ValueTask<List<T>?> AllRowsAsync<T>(NpgsqlDataReader reader, Func<NpgsqlDataReader, T> read, CancellationToken cancellationToken)
    {
        var rows = new List<T>();
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            rows.Add(read(reader));
        }

        return rows;
    }

    /// <summary>Whether <paramref name="exception"/> says the caller's session has ended.</summary>
    public static bool IsSessionEnded(Exception exception) =>
        exception is PostgresCoordinationException { InnerException: PostgresException { SqlState: SessionEndedState } };

    /// <summary>The exception a failed call throws: <see cref="PostgresCoordinationException"/> around the Npgsql one.</summary>
    public PostgresCoordinationException Failure(NpgsqlException exception, string what) => exception switch
    {
        PostgresException { SqlState: "3F000" or "42883" or "42P01" } =>
            new PostgresCoordinationException(
                $"The schema \"{Schema}\" is not installed, or is older than this library: call PostgresCoordinator.EnsureSchemaAsync first. ({exception.Message})",
                exception),
        PostgresException { SqlState: SessionEndedState } =>
            new PostgresCoordinationException("The coordinator's session ended (its LISTEN connection closed); the coordinator reconnects on the next call.", exception),
        _ => new PostgresCoordinationException($"{what} failed: {exception.Message}", exception),
    };

    public static NpgsqlParameter<TValue> Parameter<TValue>(TValue value) => new() { TypedValue = value };

    private static string LoadScript()
    {
        using Stream stream = typeof(Database).Assembly.GetManifestResourceStream("AsyncPrimitives.Postgres.Schema.sql")
            ?? throw new InvalidOperationException("The schema script is missing from the assembly.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    // \z, not $: $ also matches before a final newline.
    [GeneratedRegex(@"^[a-z_][a-z0-9_]{0,62}\z", RegexOptions.CultureInvariant)]
    private static partial Regex SchemaName();
}
