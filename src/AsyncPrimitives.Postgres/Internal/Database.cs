using System.Collections.Concurrent;
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

    /// <summary>What every statement template says where the schema's name goes.</summary>
    private const string SchemaPlaceholder = "__schema__";

    private readonly NpgsqlDataSource _source;

    /// <summary>The statements of this schema, by template (see <see cref="Sql"/>).</summary>
    private readonly ConcurrentDictionary<string, string> _statements = new(StringComparer.Ordinal);

    public Database(NpgsqlDataSource source, string schema)
    {
        _source = source;
        Schema = schema;
    }

    public string Schema { get; }

    /// <summary>The schema name as an SQL identifier (quoted: the name may be a keyword).</summary>
    public string Quoted => "\"" + Schema + "\"";

    /// <summary>The LISTEN/NOTIFY channel: the schema name.</summary>
    public string Channel => Schema;

    /// <summary>
    /// The statement <paramref name="template"/> for this schema: every <c>__schema__</c> in it replaced by the quoted
    /// schema name. Made once per template; every query method takes templates. The statements live next to the code
    /// that binds their parameters.
    /// </summary>
    public string Sql(string template) =>
        _statements.GetOrAdd(template, static (t, quoted) => t.Replace(SchemaPlaceholder, quoted, StringComparison.Ordinal), Quoted);

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
}
