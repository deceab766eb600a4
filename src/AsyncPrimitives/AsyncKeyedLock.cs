using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A lock per key (or a semaphore of <see cref="MaxCountPerKey"/> per key) for asynchronous code: callers that name
/// the same key take turns, callers with different keys never wait for each other. A key's lock exists only while
/// someone holds it or waits for it: it is created by the first acquire and removed by the last release.
/// </summary>
/// <typeparam name="TKey">The type of the keys.</typeparam>
/// <remarks>
/// <para><b>Fairness.</b> Waiters for one key acquire strictly in arrival order; while anyone waits for a key,
/// <see cref="TryAcquire(TKey, out Releaser)"/> of that key fails and a release hands the key to its oldest waiter.</para>
/// <para><b>No leak.</b> <see cref="KeyCount"/> counts the keys with a holder or a waiter; it is 0 once everything is
/// released, and the lock keeps no reference to a key it no longer holds. Memory grows with the keys held at once,
/// never with the keys ever seen.</para>
/// <para><b>Cancellation and timeouts</b> are those of <see cref="AsyncSemaphore"/>: a token that is already cancelled
/// fails the call at once (and creates nothing); a timed-out wait throws <see cref="TimeoutException"/>, a cancelled one
/// <see cref="OperationCanceledException"/>, and the waiter leaves holding nothing. When a key is handed over just as
/// its waiter's token is cancelled, exactly one wins: the wait returns the key, or it throws and the key goes to the
/// next waiter (or is removed if there is none). Nothing is lost.</para>
/// <para><b>Not reentrant.</b> Acquiring a key again from the code that holds it waits (with one permit per key).</para>
/// <para><b>Continuations.</b> A release never runs a waiter's continuation inline. Acquiring and releasing a key
/// nobody else holds takes one short lock each (keys are spread over several locks, the processor count rounded up to a
/// power of two, 2 to 64) and, once warmed up, allocates nothing while each of those locks has at most eight keys held
/// at once: released keys' entries are reused. Beyond that, a lock's table grows (and shrinks again as keys are
/// released, giving the memory back) and keeps at most 16 released entries for reuse, so bursts of many keys held at
/// once allocate.</para>
/// </remarks>
/// <example>
/// <code>
/// var perAccount = new AsyncKeyedLock&lt;string&gt;();
/// using (await perAccount.AcquireAsync(accountId, cancellationToken))
/// {
///     await UpdateBalanceAsync(accountId, cancellationToken); // one update per account at a time
/// }
/// </code>
/// </example>
[DebuggerDisplay("Name = {Name}, KeyCount = {KeyCount}, MaxCountPerKey = {MaxCountPerKey}")]
public sealed partial class AsyncKeyedLock<TKey>
    where TKey : notnull
{
    /// <summary>Entries a stripe keeps for reuse after their key is released.</summary>
    internal const int EntryPoolCapacity = 16;

    /// <summary>The smallest bucket table of a stripe; a power of two.</summary>
    internal const int MinBuckets = 8;

    /// <summary>Each stripe has its own lock and table; a key's stripe is fixed by its hash. A power of two long.</summary>
    private readonly Stripe[] _stripes;

    /// <summary>Bits of the mixed hash that select the stripe (the low ones); the bucket uses the bits above them.</summary>
    private readonly int _stripeBits;

    /// <summary>The key comparer, or null for <see cref="EqualityComparer{T}.Default"/> (called directly, so the JIT
    /// can devirtualize it for value-type keys).</summary>
    private readonly IEqualityComparer<TKey>? _comparer;

    private readonly int _maxCountPerKey;
    private readonly TimeProvider _timeProvider;

    /// <summary>Creates a keyed lock with no keys.</summary>
    /// <param name="maxCountPerKey">How many callers may hold one key at once: 1 (the default) for a lock per key,
    /// more for a semaphore per key.</param>
    /// <param name="comparer">
    /// Compares keys; <see cref="EqualityComparer{T}.Default"/> when null. Its <c>Equals</c> (or the key's own) runs under
    /// an internal lock, <c>GetHashCode</c> before it: keep both fast, and never use this keyed lock from them.
    /// </param>
    /// <param name="timeProvider">The clock for timeouts; <see cref="TimeProvider.System"/> when null.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxCountPerKey"/> is not positive.</exception>
    public AsyncKeyedLock(int maxCountPerKey = 1, IEqualityComparer<TKey>? comparer = null, TimeProvider? timeProvider = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxCountPerKey);
        _maxCountPerKey = maxCountPerKey;
        _comparer = comparer is null || ReferenceEquals(comparer, EqualityComparer<TKey>.Default) ? null : comparer;
        _timeProvider = timeProvider ?? TimeProvider.System;

        int stripes = StripeCountFor(Environment.ProcessorCount);
        _stripes = new Stripe[stripes];
        for (int i = 0; i < stripes; i++)
        {
            _stripes[i] = new Stripe();
        }

        _stripeBits = BitCount(stripes - 1);
    }

    /// <summary>
    /// A name for diagnostics (<c>new AsyncKeyedLock&lt;string&gt; { Name = "per-account" }</c>): shown by <see cref="ToString"/> and
    /// the <c>asynctools.name</c> tag of its metrics (one series for all its keys: a key is never a tag); null (the default) for none.
    /// </summary>
    public string? Name { get; init; }

    /// <summary>How many callers may hold one key at once.</summary>
    public int MaxCountPerKey => _maxCountPerKey;

    /// <summary>The number of keys that someone holds or waits for (a snapshot); 0 once every key is released.</summary>
    public int KeyCount
    {
        get
        {
            int count = 0;
            foreach (Stripe stripe in _stripes)
            {
                count += Volatile.Read(ref stripe.Count);
            }

            return count;
        }
    }

    /// <summary>Acquires <paramref name="key"/>, waiting in FIFO order while it is held by <see cref="MaxCountPerKey"/> callers.</summary>
    /// <param name="key">The key.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the key when disposed.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="key"/> is null.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the key was acquired.</exception>
    public ValueTask<Releaser> AcquireAsync(TKey key, CancellationToken cancellationToken = default)
    {
        ThrowIfNull(key);
        return AcquireCore(key, Timeout.InfiniteTimeSpan, cancellationToken);
    }

    /// <summary>Acquires <paramref name="key"/>, waiting in FIFO order at most <paramref name="timeout"/>.</summary>
    /// <param name="key">The key.</param>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/>
    /// to acquire now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the key when disposed.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="key"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The key was not acquired within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the key was acquired.</exception>
    public ValueTask<Releaser> AcquireAsync(TKey key, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfNull(key);
        TimeoutArgument.ThrowIfInvalid(timeout);
        return AcquireCore(key, timeout, cancellationToken);
    }

    /// <summary>Acquires <paramref name="key"/> if that needs no wait (fewer than <see cref="MaxCountPerKey"/> hold it
    /// and nobody waits for it); never waits.</summary>
    /// <param name="key">The key.</param>
    /// <param name="releaser">When this returns true, releases the key when disposed.</param>
    /// <returns>True if the key was acquired.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="key"/> is null.</exception>
    public bool TryAcquire(TKey key, out Releaser releaser)
    {
        ThrowIfNull(key);
        uint hash = Hash(key);
        Stripe stripe = StripeOf(hash);
        var completions = default(Completions<Releaser>);
        WaitQueue<Releaser, Policy>.Admission admission;
        lock (stripe.Sync)
        {
            admission = Admit(stripe, key, hash, mayWait: false, CancellationToken.None, ref completions, out _);
        }

        Debug.Assert(admission.Node is null, "a call that may not wait never queues");
        releaser = admission.Result;
        return admission.Kind == WaitQueue<Releaser, Policy>.Entry.Served;
    }

    /// <summary>Whether anyone holds <paramref name="key"/> right now (a snapshot).</summary>
    /// <param name="key">The key.</param>
    /// <returns>True if the key is held.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="key"/> is null.</exception>
    public bool IsHeld(TKey key)
    {
        ThrowIfNull(key);
        uint hash = Hash(key);
        Stripe stripe = StripeOf(hash);
        lock (stripe.Sync)
        {
            return Find(stripe, key, hash) is not null;
        }
    }

    /// <summary>Describes the state, like Toro's <c>__str__</c>: <c>AsyncKeyedLock(keys=2, maxCountPerKey=1)</c>, or with a
    /// <see cref="Name"/> <c>AsyncKeyedLock(name="per-account", keys=2, maxCountPerKey=1)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString() => Display.Format(
        "AsyncKeyedLock", Name, string.Format(CultureInfo.InvariantCulture, "keys={0}, maxCountPerKey={1}", KeyCount, _maxCountPerKey));

    /// <summary>The line of waiters for <paramref name="key"/> (none when nobody waits for it), for tests.</summary>
    internal WaitLines Lines(TKey key)
    {
        uint hash = Hash(key);
        Stripe stripe = StripeOf(hash);
        lock (stripe.Sync)
        {
            return Find(stripe, key, hash)?.Line is { } line ? new WaitLines(line) : new WaitLines(NoLine.Instance);
        }
    }

    /// <summary>The number of stripes, for tests.</summary>
    internal int StripeCount => _stripes.Length;

    /// <summary>Releases one hold of <paramref name="key"/>, whoever took it; for tests that release what they did not acquire.</summary>
    internal void Release(TKey key)
    {
        uint hash = Hash(key);
        Stripe stripe = StripeOf(hash);
        Entry? entry;
        lock (stripe.Sync)
        {
            entry = Find(stripe, key, hash);
        }

        if (entry is null)
        {
            ThrowHelper.ThrowSynchronizationLock_NotHeld();
        }

        Release(entry, Volatile.Read(ref entry.Generation));
    }

    /// <summary>Whether a key can be null: a reference type, or a nullable value type (<c>int?</c>).</summary>
    private static readonly bool s_keyCanBeNull = default(TKey) is null;

    private static void ThrowIfNull(TKey key)
    {
        // The flag first: unoptimized code would box a value-type key for the null test.
        if (s_keyCanBeNull && key is null)
        {
            ThrowKeyNull();
        }
    }

    [DoesNotReturn]
    private static void ThrowKeyNull() => throw new ArgumentNullException("key");

    private ValueTask<Releaser> AcquireCore(TKey key, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<Releaser>(cancellationToken);
        }

        uint hash = Hash(key);
        Stripe stripe = StripeOf(hash);
        var completions = default(Completions<Releaser>);
        WaitQueue<Releaser, Policy>.Admission admission;
        WaitQueue<Releaser, Policy>? line;
        lock (stripe.Sync)
        {
            admission = Admit(stripe, key, hash, mayWait: timeout != TimeSpan.Zero, cancellationToken, ref completions, out line);
        }

        completions.CompleteAll(); // empty: an acquire serves nobody else
        return line is null && admission.Kind == WaitQueue<Releaser, Policy>.Entry.Served
            ? new ValueTask<Releaser>(admission.Result)
            : line is null ? ValueTask.FromException<Releaser>(ThrowHelper.TimeoutNow())
            : line.WaitAsync(admission, timeout, cancellationToken);
    }

    /// <summary>
    /// Under the stripe's lock: the key's entry is found or created (a new key is served at once), and the caller is
    /// admitted into the key's line by the engine's acquire sequence. A key nobody has waited for has no line yet:
    /// the policy serves the caller directly, and the line is created by the first caller that must wait.
    /// </summary>
    private WaitQueue<Releaser, Policy>.Admission Admit(
        Stripe stripe, TKey key, uint hash, bool mayWait, CancellationToken cancellationToken, ref Completions<Releaser> completions, out WaitQueue<Releaser, Policy>? line)
    {
        Entry entry = Find(stripe, key, hash) ?? Add(stripe, key, hash);
        var policy = new Policy(entry);
        line = entry.Line;
        if (line is null)
        {
            if (policy.TryAcquire(default, mayWait, ref completions, out Releaser result))
            {
                return WaitQueue<Releaser, Policy>.Admission.Served(result);
            }

            if (!mayWait)
            {
                return WaitQueue<Releaser, Policy>.Admission.Unavailable;
            }

            line = entry.Line = new WaitQueue<Releaser, Policy>("AsyncKeyedLock", policy, stripe.Sync, _timeProvider) { Name = Name };
        }

        return line.Admit(policy, default, mayWait, cancellationToken, ref completions);
    }

    /// <summary>Returns one hold of <paramref name="entry"/>: to its oldest waiter if there is one, else the key is
    /// released and, with no holder left, removed.</summary>
    private void Release(Entry entry, int generation)
    {
        Stripe stripe = entry.Stripe;
        var completions = default(Completions<Releaser>);
        bool held;
        lock (stripe.Sync)
        {
            held = entry.Generation == generation;
            if (held && (entry.Line is not { } line || !line.TryServeNext(new Releaser(entry, generation), ref completions)) && --entry.Holders == 0)
            {
                Remove(stripe, entry);
            }
        }

        completions.CompleteAll();
        if (!held)
        {
            ThrowHelper.ThrowSynchronizationLock_NotHeld();
        }
    }

    /// <summary>Releases a hold of a key when disposed. Dispose it exactly once; <c>default(Releaser)</c> does nothing.</summary>
    public readonly struct Releaser : IDisposable
    {
        /// <summary>The key's entry, and its generation when this hold was granted (an entry is reused for other keys
        /// once released: a releaser of an older generation must not release them).</summary>
        private readonly Entry? _entry;
        private readonly int _generation;

        internal Releaser(Entry entry, int generation)
        {
            _entry = entry;
            _generation = generation;
        }

        /// <summary>Releases the key, handing it to its oldest waiter if there is one.</summary>
        /// <remarks>Dispose each releaser exactly once. One disposed again while its key is still held (by the waiter it
        /// was handed to, or another holder) cannot be told from that holder's own release and releases that hold.</remarks>
        /// <exception cref="SynchronizationLockException">This releaser was disposed before and its key has been free since
        /// (whether nobody holds it now or another caller has taken it anew; that caller keeps it).</exception>
        public void Dispose()
        {
            if (_entry is { } entry)
            {
                entry.Owner.Release(entry, _generation);
            }
        }
    }

    /// <summary>The engine's view of a key: a caller is served while fewer than <see cref="MaxCountPerKey"/> hold it.</summary>
    internal readonly struct Policy(Entry entry) : IWaitPolicy<Releaser>
    {
        public bool HasLockFreePath => false;

        public bool TryAcquire(Releaser offer, bool willWait, ref Completions<Releaser> completions, out Releaser result)
        {
            if (entry.Holders < entry.Owner._maxCountPerKey)
            {
                entry.Holders++;
                result = new Releaser(entry, entry.Generation);
                return true;
            }

            result = default;
            return false;
        }

        public Exception? Refusal() => null;

        public void OnWaiterLeft(ref Completions<Releaser> completions)
        {
            // A key has holders while anyone waits for it, and they keep it; a waiter leaving frees nothing.
            Debug.Assert(entry.Holders > 0, "a key with waiters has holders");
        }
    }

    /// <summary>The lines of a key nobody waits for: none.</summary>
    private sealed class NoLine : IWaitLine
    {
        public static readonly NoLine Instance = new();

        public WaitLineSnapshot Snapshot() => new([], 0);
    }
}
