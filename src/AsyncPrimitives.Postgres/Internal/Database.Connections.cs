using System.Collections.Concurrent;
using System.Transactions;
using Npgsql;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>The connections the calls run on: opened from the data source's pool outside any ambient transaction, a
/// few kept open between calls, at READ COMMITTED, and closed when the coordinator is disposed.</summary>
internal sealed partial class Database
{
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
}
