using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using AsyncPrimitives.Postgres.Internal;
using Npgsql;

namespace AsyncPrimitives.Postgres;

/// <summary>
/// A durable work queue shared by every process that uses the same name in the same schema: items are rows, put in
/// committed transactions (optionally the caller's own), delivered under a lease, and deleted only when a consumer
/// completes them. Create it with <see cref="PostgresCoordinator.CreateQueue{T}"/>.
/// </summary>
/// <remarks>
/// <para><b>At least once.</b> An item is never lost, and may be delivered more than once: a delivery whose consumer
/// crashes, is cut off for a lease duration, or abandons it, is delivered again (with <see cref="PostgresDelivery{T}.Attempt"/>
/// one higher), possibly while the first consumer is still working on it if it was cut off. Make the work idempotent,
/// or check <see cref="PostgresDelivery{T}.Lost"/>. A completion that comes too late is refused with
/// <see cref="PostgresLeaseLostException"/>, never silently applied.</para>
/// <para><b>Leases.</b> A delivery is held under a lease that the coordinator renews in the background for as long as
/// the delivery is neither completed nor abandoned, so a long job keeps its item however long it runs; only a consumer
/// that stops renewing (it died, or cannot reach the server) loses it. After
/// <see cref="PostgresQueueOptions.MaxAttempts"/> deliveries without completion, the item moves to the dead-letter
/// table (<see cref="DeadLetterCountAsync"/>).</para>
/// <para><b>Order.</b> Gets take items in the <see cref="PostgresQueueOptions.Order"/> of the process asking; items
/// being taken by another consumer at that moment are skipped, so under concurrency the order is approximate, as it is
/// for any queue with several consumers. An item that comes back keeps its place (its id).</para>
/// <para><b>Waits.</b> A get waits until an item is put, woken by LISTEN/NOTIFY from whichever process put it (after
/// its transaction committed), with <see cref="PostgresCoordinatorOptions.PollInterval"/> as the backstop. A cancelled or
/// timed-out get takes nothing.</para>
/// <para><b>Shutdown.</b> As <see cref="AsyncQueueBase{T}.Shutdown(bool)"/>, but recorded on the server, so every process
/// sees it: puts then throw <see cref="QueueShutDownException"/>, and so do gets once nothing is left to deliver. An
/// immediate shutdown drops every item left, delivered ones included, so nothing stays unfinished. A queue name that
/// was shut down stays shut down.</para>
/// </remarks>
/// <typeparam name="T">The item type, written as JSON by System.Text.Json with the coordinator's
/// <see cref="PostgresCoordinatorOptions.JsonSerializerOptions"/>.</typeparam>
/// <example>
/// <code>
/// PostgresQueue&lt;Job&gt; jobs = coordinator.CreateQueue&lt;Job&gt;("jobs");
/// await jobs.PutAsync(new Job(42), cancellationToken: cancellationToken);
///
/// await using PostgresDelivery&lt;Job&gt; delivery = await jobs.GetAsync(cancellationToken);
/// await RunAsync(delivery.Item, delivery.Lost);
/// await delivery.CompleteAsync(cancellationToken);
/// </code>
/// </example>
[DebuggerDisplay("{ToString(),nq}")]
public sealed partial class PostgresQueue<T>
{
    private readonly PostgresCoordinator _coordinator;
    private readonly JsonTypeInfo<T> _contract;
    private readonly string _orderCode;

    internal PostgresQueue(PostgresCoordinator coordinator, string name, QueueOrder order, int maxAttempts, TimeSpan leaseDuration, JsonTypeInfo<T> contract)
    {
        _coordinator = coordinator;
        Name = name;
        Order = order;
        MaxAttempts = maxAttempts;
        LeaseDuration = leaseDuration;
        _contract = contract;
        _orderCode = order switch { QueueOrder.Lifo => "l", QueueOrder.Priority => "p", _ => "f" };
        WakeKey = "q:" + name;
        JoinKey = "j:" + name;
    }

    /// <summary>The queue's name: every process that uses it (in the same schema) shares the items.</summary>
    public string Name { get; }

    internal QueueOrder Order { get; }

    internal int MaxAttempts { get; }

    internal TimeSpan LeaseDuration { get; }

    /// <summary>The key that wakes getters (an item was put or came back, or the queue was shut down).</summary>
    internal string WakeKey { get; }

    /// <summary>The key that wakes joins (nothing is unfinished any more, or the queue was shut down).</summary>
    internal string JoinKey { get; }

    /// <summary>Puts an item in its own transaction; getters in every process are woken once it has committed.</summary>
    /// <param name="item">The item.</param>
    /// <param name="priority">The item's priority for a <see cref="QueueOrder.Priority"/> get: smaller first. Kept, but
    /// not used, by the other orders.</param>
    /// <param name="cancellationToken">Cancels the put until it reaches the server (once there, it runs to its answer); a
    /// cancelled put did not enqueue the item.</param>
    /// <returns>A task that completes when the item is committed.</returns>
    /// <exception cref="ArgumentException">System.Text.Json cannot write <paramref name="item"/> (a cycle, a value it does
    /// not support such as <see cref="double.NaN"/> without named literals; thrown at the call, with its exception as the
    /// inner one).</exception>
    /// <exception cref="QueueShutDownException">The queue is shut down; the item was not enqueued.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled; the item was not enqueued.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached or refused the put; the item was
    /// not enqueued, except when the connection failed after the server had committed it (the call then cannot tell).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask PutAsync(T item, int priority = 0, CancellationToken cancellationToken = default) =>
        PutCoreAsync(Write([item], nameof(item)), priority, transaction: null, cancellationToken);

    /// <summary>
    /// Puts an item inside <paramref name="transaction"/>: it is enqueued if and only if that transaction commits (with
    /// the business data written in it), and getters are woken once it has.
    /// </summary>
    /// <param name="item">The item.</param>
    /// <param name="transaction">An open transaction on the coordinator's database (same host, port and database as
    /// its data source, compared as written in the connection strings). The put adds no NOTIFY to it: the coordinator
    /// watches for its commit instead.</param>
    /// <param name="priority">The item's priority (see <see cref="PutAsync(T, int, CancellationToken)"/>).</param>
    /// <param name="cancellationToken">Cancels the put before its statement is sent (it then left the transaction
    /// untouched); once sent, the statement runs to its answer.</param>
    /// <returns>A task that completes when the item is written in the transaction.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="transaction"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="transaction"/> has completed, or its connection is to
    /// another database than the coordinator's data source; or System.Text.Json cannot write <paramref name="item"/>
    /// (the transaction is then untouched).</exception>
    /// <exception cref="QueueShutDownException">The queue is shut down; the transaction is aborted.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server refused the put; the transaction is aborted.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask PutAsync(T item, NpgsqlTransaction transaction, int priority = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        _coordinator.ValidateTransaction(transaction);
        return PutCoreAsync(Write([item], nameof(item)), priority, transaction, cancellationToken);
    }

    /// <summary>Puts several items, in order, in one transaction (all or none): the batch form of
    /// <see cref="PutAsync(T, int, CancellationToken)"/>.</summary>
    /// <param name="items">The items; nothing is done for none.</param>
    /// <param name="priority">The priority of every item (see <see cref="PutAsync(T, int, CancellationToken)"/>).</param>
    /// <param name="cancellationToken">Cancels the put until it reaches the server (once there, it runs to its answer); a
    /// cancelled put enqueued nothing.</param>
    /// <returns>A task that completes when the items are committed.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="items"/> is null.</exception>
    /// <exception cref="ArgumentException">System.Text.Json cannot write one of <paramref name="items"/> (its index is
    /// in the message); nothing was enqueued.</exception>
    /// <exception cref="QueueShutDownException">The queue is shut down; nothing was enqueued.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled; nothing was enqueued.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached or refused the put (see
    /// <see cref="PutAsync(T, int, CancellationToken)"/>).</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask PutManyAsync(IEnumerable<T> items, int priority = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(items);
        return PutCoreAsync(Write([.. items], nameof(items)), priority, transaction: null, cancellationToken);
    }

    /// <summary>The items waiting to be delivered across all processes (a snapshot; deliveries that expired, or whose
    /// holder's session has ended, included when they have an attempt left, as they will be delivered again: a dead
    /// session's once nothing else waits).</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The number of items waiting.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public async ValueTask<long> CountAsync(CancellationToken cancellationToken = default) =>
        (await CountsAsync(cancellationToken).ConfigureAwait(false)).Waiting;

    /// <summary>The items put and not completed (waiting or delivered) across all processes: the
    /// <c>UnfinishedTasks</c> of the in-memory queues, counted on the server.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The number of unfinished items.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public async ValueTask<long> UnfinishedAsync(CancellationToken cancellationToken = default) =>
        (await CountsAsync(cancellationToken).ConfigureAwait(false)).Unfinished;

    /// <summary>The items of this queue moved to the dead-letter table (delivered <see cref="PostgresQueueOptions.MaxAttempts"/>
    /// times without completion), and those whose last delivery expired or whose holder's session has ended (a get moves
    /// them: the next one for an expired delivery, the next that finds nothing else waiting for a dead session's).</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The number of dead letters.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public async ValueTask<long> DeadLetterCountAsync(CancellationToken cancellationToken = default) =>
        (await CountsAsync(cancellationToken).ConfigureAwait(false)).Dead;

    /// <summary>Waits until nothing is unfinished: every item put has been completed (or dead-lettered, or dropped by an
    /// immediate shutdown), by any process.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when nothing is unfinished.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, or the coordinator's
    /// connection failed during the wait.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask JoinAsync(CancellationToken cancellationToken = default) =>
        JoinCoreAsync(Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Waits at most <paramref name="timeout"/> until nothing is unfinished (see <see cref="JoinAsync(CancellationToken)"/>).</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/> to check once.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when nothing is unfinished.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">Items were still unfinished after <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached, or the coordinator's
    /// connection failed during the wait.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public ValueTask JoinAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return JoinCoreAsync(timeout, cancellationToken);
    }

    /// <summary>
    /// Shuts the queue down for every process: later puts throw <see cref="QueueShutDownException"/>, and so do gets
    /// once nothing is left to deliver; waiting gets and joins are woken. With <paramref name="immediate"/>, every item
    /// left is dropped, delivered ones included (their completions then succeed as no-ops, and their
    /// <see cref="PostgresDelivery{T}.Lost"/> fires), so nothing is unfinished. Idempotent; an immediate shutdown after a
    /// plain one still drops what is left. A put in flight either commits before the shutdown or fails.
    /// </summary>
    /// <param name="immediate">Drop every item left.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when the shutdown is committed.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="PostgresCoordinationException">The server could not be reached.</exception>
    /// <exception cref="ObjectDisposedException">The coordinator was disposed.</exception>
    public async ValueTask ShutdownAsync(bool immediate = false, CancellationToken cancellationToken = default)
    {
        _coordinator.ThrowIfDisposed();
        Database database = _coordinator.Database;
        await database.QueryAsync(
            "SELECT __schema__.queue_shutdown($1, $2)",
            [Database.Parameter(Name), Database.Parameter(immediate)],
            static _ => true,
            Database.Retry.Always,
            cancellationToken).ConfigureAwait(false);
        Wake(WakeKey, apart: true); // a getter woken by the same notification as a put's may take the items and leave
        Wake(JoinKey);
    }

    /// <inheritdoc />
    public override string ToString() => string.Format(
        CultureInfo.InvariantCulture,
        "PostgresQueue<{0}>(name={1}, order={2}, maxAttempts={3})",
        typeof(T).Name,
        Name,
        Order,
        MaxAttempts);

    /// <summary>Wakes the waits on <paramref name="key"/> here at once, and in the other processes by a notification
    /// (<paramref name="apart"/>: one of its own, see <see cref="Notifier.Request"/>).</summary>
    internal void Wake(string key, bool apart = false)
    {
        _coordinator.Signals.Signal(key);
        _coordinator.Notifier.Request(key, apart);
    }

    private const string PutSql = "SELECT __schema__.queue_put($1, $2, $3::json[])";

    /// <summary>The JSON text of each item, written at the call: an item System.Text.Json cannot write (a cycle, a
    /// value it does not support) is bad input, and nothing of its batch is put.</summary>
    private string[] Write(T[] items, string parameterName)
    {
        var payloads = new string[items.Length];
        for (int i = 0; i < items.Length; i++)
        {
            try
            {
                payloads[i] = JsonSerializer.Serialize(items[i], _contract);
            }
            catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException or ArgumentException)
            {
                string which = parameterName == "item" ? "the item" : $"the item at index {i}";
                throw new ArgumentException($"System.Text.Json cannot write {which}: {e.Message}", parameterName, e);
            }
        }

        return payloads;
    }

    private async ValueTask PutCoreAsync(string[] payloads, int priority, NpgsqlTransaction? transaction, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        _coordinator.ThrowIfDisposed();
        if (payloads.Length == 0)
        {
            return;
        }

        int[] priorities = new int[payloads.Length];
        Array.Fill(priorities, priority);
        Database database = _coordinator.Database;
        NpgsqlParameter[] parameters =
        [
            Database.Parameter(Name), Database.Parameter(priorities), Database.Parameter(payloads),
        ];
        try
        {
            if (transaction is null)
            {
                await database.QueryAsync(PutSql, parameters, static _ => true, Database.Retry.IfNotRun, cancellationToken, Database.Cancel.BeforeSending)
                    .ConfigureAwait(false);
                Wake(WakeKey);
            }
            else
            {
                long transactionId;
                try
                {
                    // Not cancelled once sent (the token was looked at above): a put that ran must never be reported as
                    // one that did not, in a transaction the caller may still commit.
                    transactionId = await database.QueryAsync(
                        transaction.Connection!, prepare: false, PutSql, parameters, static r => r.GetInt64(0), CancellationToken.None, transaction)
                        .ConfigureAwait(false);
                }
                catch (InvalidOperationException e)
                {
                    // Npgsql refuses the transaction (committed or rolled back) before sending anything.
                    throw new ArgumentException($"The transaction cannot carry the put: {e.Message}", nameof(transaction), e);
                }

                _coordinator.CommitWatcher.Watch(transactionId, WakeKey);
            }
        }
        catch (PostgresCoordinationException e) when (e.InnerException is PostgresException { SqlState: Database.QueueShutDownState })
        {
            throw new QueueShutDownException($"The queue '{Name}' is shut down.", e.InnerException);
        }
    }

    private async ValueTask<(long Waiting, long Unfinished, long Dead)> CountsAsync(CancellationToken cancellationToken)
    {
        _coordinator.ThrowIfDisposed();
        Database database = _coordinator.Database;
        return await database.QueryAsync(
            "SELECT waiting, unfinished, dead FROM __schema__.queue_counts($1)",
            [Database.Parameter(Name)],
            static r => (r.GetInt64(0), r.GetInt64(1), r.GetInt64(2)),
            Database.Retry.Always,
            cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Waits until nothing is unfinished. A join that may sleep is recorded on the server while it waits (see
    /// queue_join), because a completion looks whether it emptied the queue, and wakes the joins, only while one waits.
    /// </summary>
    private async ValueTask JoinCoreAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var wait = new ServerWait(_coordinator, nameof(PostgresQueue<T>), Name, JoinKey, int.MaxValue, WakeSignals.Polling.Each, timeout);
        long? joinId = null;
        try
        {
            while (true)
            {
                // The session carries the notifications that end the wait early.
                Session session = await wait.BeginCallAsync(cancellationToken).ConfigureAwait(false);
                long unfinished;
                if (wait.Waits)
                {
                    // Cancelled only until it is sent, never half-way: a row recorded by a call whose answer is lost
                    // would stay until the session ends.
                    (joinId, unfinished) = await _coordinator.Database.QueryAsync(
                        "SELECT join_id, unfinished FROM __schema__.queue_join($1, $2, $3, $4)",
                        [
                            Database.Parameter(Name), Database.Parameter(joinId), Database.Parameter(_coordinator.Owner),
                            Database.Parameter(session.Key),
                        ],
                        static r => (r.GetInt64(0), r.GetInt64(1)),
                        Database.Retry.Always,
                        cancellationToken,
                        Database.Cancel.BeforeSending).ConfigureAwait(false);
                }
                else
                {
                    unfinished = (await CountsAsync(cancellationToken).ConfigureAwait(false)).Unfinished;
                }

                if (unfinished == 0)
                {
                    return;
                }

                await wait.SleepAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (wait.Failed(e, cancellationToken))
        {
            throw; // never reached: the filter records the outcome and lets the exception pass
        }
        finally
        {
            if (joinId is long id)
            {
                // If this cannot reach the server, the row only makes completions look whether they emptied the queue,
                // and the next join of the queue removes it once its session has ended.
                await _coordinator.Database.RunCleanupAsync(
                    "SELECT __schema__.queue_join_end($1, $2)",
                    [Database.Parameter(id), Database.Parameter(_coordinator.Owner)],
                    static _ => true,
                    _coordinator.CleanupTimeout).ConfigureAwait(false);
            }
        }
    }
}
