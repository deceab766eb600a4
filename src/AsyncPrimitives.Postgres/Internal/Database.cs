using System.Reflection;
using System.Text.RegularExpressions;
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

    /// <summary>The SQLSTATE the schema's functions raise when the caller's session has ended.</summary>
    public const string SessionEndedState = "AT001";

    /// <summary>The SQLSTATE the queue functions raise when the queue is shut down (and, for a get, nothing waits).</summary>
    public const string QueueShutDownState = "AT002";

    private static readonly Lazy<string> s_script = new(LoadScript);

    private readonly NpgsqlDataSource _source;

    public Database(NpgsqlDataSource source, string schema)
    {
        _source = source;
        Schema = schema;
        string s = Quoted;
        Channel = schema;
        Install = s_script.Value.Replace("__schema__", s, StringComparison.Ordinal);
        InstalledVersion = $"SELECT coalesce(max(version), 0) FROM {s}.schema_version";
        PermitAcquire = $"SELECT granted_token, waiting_ticket FROM {s}.permit_acquire($1::\"char\", $2, $3, $4, $5, $6, $7, $8, $9)";
        PermitRelease = $"SELECT {s}.permit_release($1::\"char\", $2, $3, $4)";
        PermitLeave = $"SELECT {s}.permit_leave($1::\"char\", $2, $3, $4)";
        PermitFree = $"SELECT {s}.permit_free($1::\"char\", $2, $3)";
        Renew = $"SELECT {s}.renew($1, $2, $3, $4, $5, $6, $7, $8)";
        QueuePut = $"SELECT {s}.queue_put($1, $2, $3::jsonb[])";
        QueueGet = $"SELECT item_id, item_lease_token, item_attempt, item_priority, item_payload::text FROM {s}.queue_get($1, $2::\"char\", $3, $4, $5, $6, $7, $8)";
        QueueComplete = $"SELECT completed, gone, drained, dropped FROM {s}.queue_complete($1, $2, $3, $4)";
        QueueAbandon = $"SELECT {s}.queue_abandon($1, $2, $3)::text";
        QueueShutdown = $"SELECT {s}.queue_shutdown($1, $2)";
        QueueCounts = $"SELECT waiting, unfinished, dead FROM {s}.queue_counts($1)";
        QueueReclaim = $"SELECT {s}.queue_reclaim($1, true)";
        CommitStatus = "SELECT x, txid_status(x) FROM unnest($1::bigint[]) AS x";
        EndSession = $"SELECT {s}.end_session($1, $2, $3)";
    }

    /// <summary>The version of the schema this library installs and expects.</summary>
    public const int Version = 1;

    public string Schema { get; }

    /// <summary>The schema name as an SQL identifier (quoted: the name may be a keyword).</summary>
    public string Quoted => "\"" + Schema + "\"";

    /// <summary>The LISTEN/NOTIFY channel: the schema name.</summary>
    public string Channel { get; }

    public string Install { get; }

    public string InstalledVersion { get; }

    public string PermitAcquire { get; }

    public string PermitRelease { get; }

    public string PermitLeave { get; }

    public string PermitFree { get; }

    public string Renew { get; }

    public string EndSession { get; }

    public string QueuePut { get; }

    public string QueueGet { get; }

    public string QueueComplete { get; }

    public string QueueAbandon { get; }

    public string QueueShutdown { get; }

    public string QueueCounts { get; }

    public string QueueReclaim { get; }

    public string CommitStatus { get; }

    public NpgsqlDataSource Source => _source;

    /// <summary>Whether <paramref name="schema"/> is a name the options accept.</summary>
    public static bool IsValidSchemaName(string? schema) => schema is not null && SchemaName().IsMatch(schema);

    /// <summary>Opens a pooled connection; <paramref name="cancellationToken"/> cancels only the opening.</summary>
    public async ValueTask<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await _source.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException e)
        {
            throw Failure(e, "Opening a connection");
        }
    }

    /// <summary>
    /// Runs <paramref name="sql"/> with <paramref name="parameters"/> on a pooled connection and reads its first row
    /// with <paramref name="read"/> (default when there is none). <paramref name="cancellationToken"/> cancels the call;
    /// pass none for a call whose effect must be known (one that grants something).
    /// </summary>
    /// <remarks>
    /// <paramref name="retry"/> says when the call is tried again on a new connection, after the one it ran on failed.
    /// After a server restart or a network failure, the idle connections in the pool are dead, and each fails the next
    /// statement sent on it. So a failed connection clears the pool's idle connections, and the call is tried once more
    /// as <paramref name="retry"/> allows.
    /// </remarks>
    public ValueTask<T?> QueryAsync<T>(
        string sql, NpgsqlParameter[] parameters, Func<NpgsqlDataReader, T> read, Retry retry, CancellationToken cancellationToken) =>
        WithConnectionAsync(sql, parameters, (reader, ct) => FirstRowAsync(reader, read, ct), retry, cancellationToken);

    /// <summary>Runs <paramref name="sql"/> and reads every row with <paramref name="read"/> (see
    /// <see cref="QueryAsync{T}(string, NpgsqlParameter[], Func{NpgsqlDataReader, T}, Retry, CancellationToken)"/>).</summary>
    public async ValueTask<List<T>> QueryAllAsync<T>(
        string sql, NpgsqlParameter[] parameters, Func<NpgsqlDataReader, T> read, Retry retry, CancellationToken cancellationToken) =>
        (await WithConnectionAsync(sql, parameters, (reader, ct) => AllRowsAsync(reader, read, ct), retry, cancellationToken).ConfigureAwait(false))!;

    /// <summary>Runs <paramref name="sql"/> on <paramref name="connection"/> (see
    /// <see cref="QueryAsync{T}(string, NpgsqlParameter[], Func{NpgsqlDataReader, T}, Retry, CancellationToken)"/>);
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
        Retry retry, CancellationToken cancellationToken)
    {
        for (int attempt = 0; ; attempt++)
        {
            NpgsqlConnection connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
            await using var connectionScope = connection.ConfigureAwait(false);
            try
            {
                return await RunAsync(connection, prepare: true, sql, parameters, consume, cancellationToken).ConfigureAwait(false);
            }
            catch (NpgsqlException e) when (IsConnectionFailure(e, connection))
            {
                _source.Clear();
                // A termination error answering the statement means it never ran; any other failure leaves that open.
                bool ran = e is not PostgresException;
                if (attempt > 0 || cancellationToken.IsCancellationRequested || (ran && retry == Retry.IfNotRun))
                {
                    throw Failure(e, "The call");
                }
            }
            catch (NpgsqlException e)
            {
                throw Failure(e, "The call");
            }
        }
    }

    /// <summary>Whether the call failed because its connection did (not because of the statement).</summary>
    private static bool IsConnectionFailure(NpgsqlException exception, NpgsqlConnection connection) =>
        exception is PostgresException { SqlState: "57P01" or "57P02" or "57P03" }
        || (exception is not PostgresException && connection.State is System.Data.ConnectionState.Broken or System.Data.ConnectionState.Closed);

    private static async ValueTask<T?> RunAsync<T>(
        NpgsqlConnection connection, bool prepare, string sql, NpgsqlParameter[] parameters,
        Func<NpgsqlDataReader, CancellationToken, ValueTask<T?>> consume, CancellationToken cancellationToken,
        NpgsqlTransaction? transaction = null)
    {
        using var command = new NpgsqlCommand(sql, connection, transaction);
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

    [GeneratedRegex("^[a-z_][a-z0-9_]{0,62}$", RegexOptions.CultureInvariant)]
    private static partial Regex SchemaName();
}
