using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using AsyncPrimitives.Postgres.Internal;
using Npgsql;

namespace AsyncPrimitives.Postgres;

/// <summary>
/// The entry point of AsyncPrimitives.Postgres: one per process and database. Creates the locks, semaphores and queues
/// that every process using the same schema shares, and owns what they need here: the LISTEN connection that wakes this
/// process's waits, and the heartbeat that keeps its leases.
/// </summary>
/// <remarks>
/// <para><b>Setup.</b> Call <see cref="EnsureSchemaAsync"/> once at startup (every process may: it is idempotent and
/// safe when processes race). The data source must connect to PostgreSQL directly or through a pooler in session mode:
/// the coordinator keeps one connection open for LISTEN, and its session is what the server watches to free a crashed
/// process's leases. PgBouncer's transaction pooling breaks both. The coordinator's own calls run at READ COMMITTED
/// whatever the data source's default isolation level, and never enlist in an ambient <c>TransactionScope</c>: each is a
/// transaction of its own (a put joins yours only through the overload that takes an <c>NpgsqlTransaction</c>).</para>
/// <para><b>Failures.</b> When the LISTEN connection fails (its backend was terminated, the server restarted, the
/// network dropped), waits in progress throw <see cref="PostgresCoordinationException"/>, every lease held by this
/// process is lost (<see cref="PostgresLease.Lost"/> fires) and becomes free for the others, and the next call opens a
/// new connection.</para>
/// <para><b>Disposal.</b> <see cref="DisposeAsync"/> ends the session: waits in progress throw
/// <see cref="ObjectDisposedException"/>, leases held are lost and given back to the server at once. Dispose the
/// coordinator before its data source.</para>
/// </remarks>
/// <example>
/// <code>
/// await using NpgsqlDataSource dataSource = NpgsqlDataSource.Create(connectionString);
/// await using var coordinator = new PostgresCoordinator(dataSource);
/// await coordinator.EnsureSchemaAsync();
/// PostgresSemaphore partnerApi = coordinator.CreateSemaphore("partner-api", maxCount: 64);
/// </code>
/// </example>
[DebuggerDisplay("{ToString(),nq}")]
public sealed partial class PostgresCoordinator : IAsyncDisposable
{
    /// <summary>The longest lock, semaphore or queue name, in characters.</summary>
    internal const int MaxNameLength = 256;

    private static readonly TimeSpan s_minLeaseDuration = TimeSpan.FromSeconds(1);

    private readonly Lock _sync = new();

    /// <summary>The first <see cref="DisposeAsync"/>'s work, which later calls wait for; set under <see cref="_sync"/>.
    /// Disposed once set.</summary>
    private Task? _disposal;

    /// <summary>Cancelled as the disposal begins: a session being opened then (its connection waiting for the server) stops
    /// opening, rather than the disposal waiting for it.</summary>
    private readonly CancellationTokenSource _closing = new();

    /// <summary>Where the data source connects: a caller's transaction for a put must connect to the same.</summary>
    private readonly (string? Host, int Port, string? Database) _endpoint;

    /// <summary>Creates a coordinator over <paramref name="dataSource"/>; it connects on first use.</summary>
    /// <param name="dataSource">The database. It must not use multiplexing (the coordinator needs a connection of its
    /// own for LISTEN). The coordinator does not dispose it.</param>
    /// <param name="options">Settings; the defaults when null.</param>
    /// <exception cref="ArgumentNullException"><paramref name="dataSource"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="dataSource"/> uses multiplexing, or
    /// <see cref="PostgresCoordinatorOptions.Schema"/> is not a valid schema name.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><see cref="PostgresCoordinatorOptions.LeaseDuration"/> is shorter
    /// than 1 second or longer than about 49.7 days, or <see cref="PostgresCoordinatorOptions.PollInterval"/> is not
    /// positive or longer than about 49.7 days.</exception>
    public PostgresCoordinator(NpgsqlDataSource dataSource, PostgresCoordinatorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        if (new NpgsqlConnectionStringBuilder(dataSource.ConnectionString).Multiplexing)
        {
            throw new ArgumentException(
                "The data source uses multiplexing; the coordinator needs a connection of its own for LISTEN.", nameof(dataSource));
        }

        options ??= new PostgresCoordinatorOptions();
        if (!Database.IsValidSchemaName(options.Schema))
        {
            throw new ArgumentException(
                $"The schema name '{options.Schema}' is not valid: use lowercase letters, digits and underscores, starting with a " +
                "letter or an underscore (not pg_, which PostgreSQL keeps for itself), at most 63 characters.",
                nameof(options));
        }

        ValidateLeaseDuration(options.LeaseDuration, nameof(options));
        if (options.PollInterval <= TimeSpan.Zero || options.PollInterval.TotalMilliseconds > TimeoutArgument.MaxMilliseconds)
        {
            throw new ArgumentOutOfRangeException(
                nameof(options), options.PollInterval, "PollInterval must be positive and at most 4294967294 milliseconds.");
        }

        Database = new Database(dataSource, options.Schema);
        LeaseDuration = options.LeaseDuration;
        PollInterval = options.PollInterval;
        Json = options.JsonSerializerOptions ?? JsonSerializerOptions.Default;
        Time = QuietTimers.For(options.TimeProvider);
        _shortestLease = LeaseDuration;
        Signals = new WakeSignals(Time);
        Notifier = new Notifier(Database, Owner);
        CommitWatcher = new CommitWatcher(Database, Signals, Notifier, Time, PollInterval);
        _endpoint = Endpoint(dataSource.ConnectionString);
    }

    /// <summary>This coordinator's name on the server (in every row it holds); new for each coordinator.</summary>
    internal Guid Owner { get; } = Guid.NewGuid();

    internal Database Database { get; }

    internal TimeSpan LeaseDuration { get; }

    internal TimeSpan PollInterval { get; }

    internal JsonSerializerOptions Json { get; }

    internal TimeProvider Time { get; }

    internal WakeSignals Signals { get; }

    /// <summary>The places in line of this coordinator's lock and semaphore waits, by ticket; shared by all its lock and
    /// semaphore objects (tickets are unique in the schema), so that a release by one object hands the permit it frees
    /// to a wait on another object of the same name (see <see cref="PermitSet"/>).</summary>
    internal ConcurrentDictionary<long, WaitPlace> PermitPlaces { get; } = new();

    /// <summary>Permits granted by a release here to a ticket whose wait has not recorded its place yet (see
    /// <see cref="PermitSet"/>); shared as <see cref="PermitPlaces"/> is.</summary>
    internal ConcurrentDictionary<long, PermitGrant> PermitGrants { get; } = new();

    internal Notifier Notifier { get; }

    internal CommitWatcher CommitWatcher { get; }

    /// <summary>How long a clean-up call (a release, leaving a wait line) may take before it is left to expiry.</summary>
    internal TimeSpan CleanupTimeout => LeaseDuration;

    /// <summary>
    /// Creates the schema, its tables and functions if they are missing, or brings them up to this library's version.
    /// Idempotent, and safe when several processes run it at once (they take turns under an advisory lock).
    /// </summary>
    /// <remarks>
    /// Functions installed by an earlier release of the same schema version are replaced (this needs the role that owns
    /// them); those of a later release are kept, so instances of two releases can run side by side during a rolling
    /// deployment. Tables and indexes that exist are neither changed nor locked.
    /// </remarks>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the schema is ready.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, refused the statements (for
    /// example for lack of the CREATE privilege), or holds a newer version of the schema than this library knows.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public async Task EnsureSchemaAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        await Database.InstallAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Creates the lock named <paramref name="name"/> (it exists on the server from its first use).</summary>
    /// <param name="name">The lock's name: every process that uses it (in the same schema) shares the lock. At most
    /// 256 characters.</param>
    /// <returns>The lock.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="name"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is empty, white space, longer than 256 characters,
    /// or holds U+0000 or an unpaired surrogate (which PostgreSQL's text cannot).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public PostgresLock CreateLock(string name)
    {
        ValidateName(name);
        ThrowIfDisposed();
        return new PostgresLock(this, name);
    }

    /// <summary>Creates the semaphore named <paramref name="name"/> with <paramref name="maxCount"/> permits.</summary>
    /// <param name="name">The semaphore's name: every process that uses it (in the same schema) shares the permits. At
    /// most 256 characters.</param>
    /// <param name="maxCount">The most leases held at once across all processes; every process must use the same.</param>
    /// <returns>The semaphore.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="name"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is empty, white space, longer than 256 characters,
    /// or holds U+0000 or an unpaired surrogate (which PostgreSQL's text cannot).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxCount"/> is not positive.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public PostgresSemaphore CreateSemaphore(string name, int maxCount)
    {
        ValidateName(name);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxCount);
        ThrowIfDisposed();
        return new PostgresSemaphore(this, name, maxCount);
    }

    /// <summary>Creates the queue named <paramref name="name"/>, of items of type <typeparamref name="T"/>.</summary>
    /// <typeparam name="T">The item type: written and read as JSON by System.Text.Json with
    /// <see cref="PostgresCoordinatorOptions.JsonSerializerOptions"/>; checked now.</typeparam>
    /// <param name="name">The queue's name: every process that uses it (in the same schema) shares the items. At most
    /// 256 characters.</param>
    /// <param name="options">This process's settings for the queue (order, attempts, lease); the defaults when null.</param>
    /// <returns>The queue.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="name"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is empty, white space, longer than 256
    /// characters, or holds U+0000 or an unpaired surrogate; or System.Text.Json cannot write and read <typeparamref name="T"/> (the parameter named is
    /// <c>T</c>); or <see cref="PostgresQueueOptions.Order"/> is not a defined value.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><see cref="PostgresQueueOptions.MaxAttempts"/> is not positive, or
    /// <see cref="PostgresQueueOptions.LeaseDuration"/> is shorter than 1 second or longer than about 49.7 days.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public PostgresQueue<T> CreateQueue<T>(string name, PostgresQueueOptions? options = null)
    {
        ValidateName(name);
        options ??= new PostgresQueueOptions();
        if (!Enum.IsDefined(options.Order))
        {
            throw new ArgumentException($"Order {options.Order} is not a QueueOrder.", nameof(options));
        }

        if (options.MaxAttempts <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxAttempts, "MaxAttempts must be positive.");
        }

        TimeSpan leaseDuration = options.LeaseDuration ?? LeaseDuration;
        ValidateLeaseDuration(leaseDuration, nameof(options));
        System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> contract = Payload.Contract<T>(Json);
        ThrowIfDisposed();
        UseLeaseDuration(leaseDuration);
        return new PostgresQueue<T>(this, name, options.Order, options.MaxAttempts, leaseDuration, contract);
    }

    /// <summary>
    /// Ends the coordinator: its session ends (waits in progress throw <see cref="ObjectDisposedException"/>, leases
    /// held are lost and given back to the server), and later calls through its locks, semaphores and queues throw
    /// <see cref="ObjectDisposedException"/>. Nothing of it runs afterwards: items put in a caller's transaction still
    /// open are no longer watched for its commit (getters in other processes find them at their next poll). Idempotent:
    /// a later call completes when the first does.
    /// </summary>
    /// <returns>A task that completes when the session is closed.</returns>
    public async ValueTask DisposeAsync()
    {
        TaskCompletionSource? first = null;
        Task disposal;
        lock (_sync)
        {
            if (_disposal is null)
            {
                first = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _disposal = first.Task;
            }

            disposal = _disposal;
        }

        if (first is null)
        {
            await disposal.ConfigureAwait(false); // the first call's: a later call completes with it
            return;
        }

        try
        {
            _closing.Cancel();
            await CloseAsync().ConfigureAwait(false);
        }
        finally
        {
            _closing.Dispose();
            first.SetResult();
        }
    }

    /// <summary>The disposal's work: closes the session, then stops what runs in the background.</summary>
    private async Task CloseAsync()
    {
        Session? session;
        Task<Session>? connecting;
        lock (_sync)
        {
            session = _session;
            connecting = _connecting;
            _session = null;
        }

        if (connecting is not null)
        {
            // A first connect, or a reconnect after the session ended: it sees the disposal (its opening is cancelled)
            // and stops the session it may have opened, so that nothing of it runs once the disposal has returned.
            try
            {
                await connecting.ConfigureAwait(false);
            }
            catch (Exception e) when (e is PostgresCoordinationException or ObjectDisposedException or OperationCanceledException)
            {
                // It never opened, or stopped what it opened: nothing to close.
            }
        }

        if (session is not null)
        {
            await session.CloseAsync(new ObjectDisposedException(nameof(PostgresCoordinator))).ConfigureAwait(false);
        }

        await CommitWatcher.StopAsync().ConfigureAwait(false);
        await Notifier.FlushAsync().ConfigureAwait(false);
        await Database.CloseAsync().ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override string ToString()
    {
        Session? session = CurrentSession;
        return string.Format(
            CultureInfo.InvariantCulture,
            "PostgresCoordinator(schema={0}, {1})",
            Database.Schema,
            IsDisposed ? "disposed" : session is null || session.IsEnded ? "not connected" : "session=backend " + session.Pid.ToString(CultureInfo.InvariantCulture));
    }

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(IsDisposed, this);

    private bool IsDisposed => Volatile.Read(ref _disposal) is not null;
}
