using System.Collections.Concurrent;
using Npgsql;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// Sends the wake-up notifications of one coordinator, after the change they announce has committed and outside its
/// transaction, and coalesced: at most one NOTIFY statement is in flight, and every key requested meanwhile goes out in
/// the next one, once. (A NOTIFY inside a transaction takes a server-wide lock at commit, which would make every
/// transaction that puts an item or releases a permit commit one at a time.)
/// </summary>
/// <remarks>
/// A notification is only a hint to check the server again. One that cannot be sent (the server is unreachable) is
/// dropped, deliberately and without an error: the waits also poll every <see cref="PostgresCoordinatorOptions.PollInterval"/>
/// (in each process, the first in line for a lock or semaphore, a queue's getters by turns: see <see cref="WakeSignals"/>),
/// so a lost hint delays a wake-up by at most that much and loses nothing.
/// </remarks>
internal sealed class Notifier
{
    private readonly Database _database;
    private readonly string _sql;

    /// <summary>Keys requested and not yet sent.</summary>
    private readonly ConcurrentDictionary<string, byte> _pending = new(StringComparer.Ordinal);

    /// <summary>1 while a drain loop runs (it sends until nothing is pending); only the thread that sets it starts one.</summary>
    private int _draining;

    /// <summary>The drain loop running now, for <see cref="FlushAsync"/>.</summary>
    private Task _drain = Task.CompletedTask;

    public Notifier(Database database, Guid owner)
    {
        _database = database;
        Tag = owner.ToString("N");
        _sql = "SELECT pg_notify($1, $3 || ' ' || key) FROM unnest($2::text[]) AS key";
    }

    /// <summary>What this coordinator's notifications start with (then a space and the key): its LISTEN connection
    /// receives them too, and ignores them, as the sender has already signalled its own waits.</summary>
    public string Tag { get; }

    /// <summary>Marks a key requested apart (see <see cref="Request"/>); no key starts with it.</summary>
    private const char ApartMark = '!';

    /// <summary>The key a notification's payload names, or null for one this coordinator sent itself.</summary>
    public string? KeyOf(string payload)
    {
        int space = payload.IndexOf(' ', StringComparison.Ordinal);
        if (space >= 0 && payload.AsSpan(0, space).SequenceEqual(Tag))
        {
            return null;
        }

        int start = space + 1;
        return payload.Length > start && payload[start] == ApartMark ? payload[(start + 1)..] : payload[start..];
    }

    /// <summary>NOTIFY statements sent so far.</summary>
    private long _sent;

    /// <summary>NOTIFY statements sent so far (each may carry several keys), for tests.</summary>
    public long Sent => Interlocked.Read(ref _sent);

    /// <summary>Asks for <paramref name="key"/> to be notified soon; returns at once.</summary>
    /// <param name="key">The key.</param>
    /// <param name="apart">
    /// Whether the notification must not merge with other requests of the key. Those requested while a NOTIFY is in
    /// flight go out once, and a process that receives it signals the key once: right for puts (a getter that takes as
    /// many items as it asked for signals the next), not for a shutdown, which a getter that took the last items would
    /// not pass on. A key requested apart goes out behind a mark, which <see cref="KeyOf"/> removes.
    /// </param>
    public void Request(string key, bool apart = false)
    {
        _pending.TryAdd(apart ? ApartMark + key : key, 0);
        if (Interlocked.CompareExchange(ref _draining, 1, 0) == 0)
        {
            _drain = Background.Run(DrainAsync);
        }
    }

    /// <summary>Waits until what was requested so far has been sent (or dropped).</summary>
    public Task FlushAsync() => Volatile.Read(ref _draining) == 0 ? Task.CompletedTask : _drain;

    private async Task DrainAsync()
    {
        while (true)
        {
            // Enumerating the dictionary takes no lock (its Keys property would take every one).
            var taken = new List<string>();
            foreach (KeyValuePair<string, byte> pending in _pending)
            {
                if (_pending.TryRemove(pending.Key, out _))
                {
                    taken.Add(pending.Key);
                }
            }

            string[] keys = [.. taken];

            if (keys.Length == 0)
            {
                Volatile.Write(ref _draining, 0);
                // A request that saw the loop still running may have added a key after the snapshot: take it over.
                if (_pending.IsEmpty || Interlocked.CompareExchange(ref _draining, 1, 0) != 0)
                {
                    return;
                }

                continue;
            }

            try
            {
                await _database.QueryAsync(
                    _sql,
                    [Database.Parameter(_database.Channel), Database.Parameter(keys), Database.Parameter(Tag)],
                    static _ => true,
                    Database.Retry.Always,
                    CancellationToken.None).ConfigureAwait(false);
                Interlocked.Increment(ref _sent);
            }
            catch (PostgresCoordinationException)
            {
                // Dropped on purpose: see the remarks. The waits' polling covers it.
            }
        }
    }
}
