using System.Diagnostics;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A reader-writer lock for asynchronous code (Toro's <c>RWLock</c>): many readers at once (up to
/// <see cref="MaxReaders"/>), or one writer.
/// </summary>
/// <remarks>
/// <para><b>Fairness.</b> Readers and writers wait in one FIFO line. A waiting writer blocks every reader that
/// arrives after it, so writers never starve; consecutive readers at the head of the line are admitted together.</para>
/// <para><b>Not reentrant.</b> Taking a read lock while holding the write lock (or the reverse, or a second write
/// lock) waits for yourself. There is no upgrade.</para>
/// <para><b>Cancellation and timeouts.</b> A token that is already cancelled fails the call at once. A timed-out or
/// cancelled waiter leaves the line holding nothing; if it was a writer holding back readers, those readers are
/// admitted right away. (Toro's RWLock leaks the reader permits a timed-out writer had collected; this lock
/// never does.) A grant that races with cancellation is either returned to the caller or passed on, never lost.</para>
/// <para><b>Continuations.</b> Releasing never runs a waiter's continuation inline. Uncontended acquire and release
/// allocate nothing.</para>
/// </remarks>
/// <example>
/// <code>
/// var rw = new AsyncReaderWriterLock();
/// using (await rw.AcquireReadAsync(cancellationToken)) { /* shared */ }
/// using (await rw.AcquireWriteAsync(cancellationToken)) { /* exclusive */ }
/// </code>
/// </example>
[DebuggerDisplay("Name = {Name}, Readers = {CurrentReaderCount}, IsWriteLockHeld = {IsWriteLockHeld}")]
public sealed class AsyncReaderWriterLock
{
    private readonly Lock _sync = new();

    /// <summary>Readers and writers in arrival order; each waiting node carries the releaser it asks for, which says
    /// whether it is a reader or a writer.</summary>
    private readonly WaitQueue<Releaser, Policy> _waiters;

    private readonly Releaser _readReleaser;
    private readonly Releaser _writeReleaser;
    private readonly int _maxReaders;

    /// <summary><see cref="_state"/> value: the write lock is held, and nobody waits.</summary>
    private const int WriterHeld = -2;

    /// <summary><see cref="_state"/> value: waiters are queued; what is held is in <see cref="_held"/>, under
    /// <see cref="_sync"/>.</summary>
    private const int Contended = -1;

    /// <summary>
    /// While nobody waits: the read locks held (&gt;= 0), or <see cref="WriterHeld"/>; uncontended acquires and
    /// releases move it by compare-and-swap, without the lock. While anyone waits: <see cref="Contended"/>. Only code
    /// holding <see cref="_sync"/> moves it to <see cref="Contended"/> (a caller about to queue, after copying it into
    /// <see cref="_held"/>) or from it (once the line is empty, copying <see cref="_held"/> back), so no fast path can
    /// take the lock past a waiter.
    /// </summary>
    private int _state;

    /// <summary>What is held while <see cref="_state"/> is <see cref="Contended"/>, in the same encoding (read locks
    /// held, or <see cref="WriterHeld"/>). Guarded by <see cref="_sync"/>.</summary>
    private int _held;

    /// <summary>Creates an unlocked reader-writer lock.</summary>
    /// <param name="maxReaders">The most read locks held at once.</param>
    /// <param name="timeProvider">The clock for timeouts; <see cref="TimeProvider.System"/> when null.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxReaders"/> is not positive.</exception>
    public AsyncReaderWriterLock(int maxReaders = int.MaxValue, TimeProvider? timeProvider = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxReaders);
        _maxReaders = maxReaders;
        _readReleaser = new Releaser(this, writer: false);
        _writeReleaser = new Releaser(this, writer: true);
        _waiters = new WaitQueue<Releaser, Policy>("AsyncReaderWriterLock", new Policy(this), _sync, timeProvider ?? TimeProvider.System);
    }

    /// <summary>
    /// A name for diagnostics (<c>new AsyncReaderWriterLock { Name = "routes" }</c>): shown by <see cref="ToString"/> and
    /// the <c>asynctools.name</c> tag of its metrics; null (the default) for none.
    /// </summary>
    public string? Name
    {
        get => _waiters.Name;
        init => _waiters.Name = value;
    }

    /// <summary>The most read locks held at once.</summary>
    public int MaxReaders => _maxReaders;

    /// <summary>Read locks held now (a snapshot).</summary>
    public int CurrentReaderCount => Math.Max(Held, 0);

    /// <summary>Whether the write lock is held now (a snapshot).</summary>
    public bool IsWriteLockHeld => Held == WriterHeld;

    /// <summary>What is held now (a snapshot), in the encoding of <see cref="_state"/>.</summary>
    private int Held => Volatile.Read(ref _state) is int state && state != Contended ? state : Volatile.Read(ref _held);

    /// <summary>The line of waiters, for tests.</summary>
    internal WaitLines Lines => new(_waiters);

    /// <summary>Takes a read lock, waiting in FIFO order behind any earlier writer.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the read lock when disposed.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was taken.</exception>
    public ValueTask<Releaser> AcquireReadAsync(CancellationToken cancellationToken = default) =>
        _waiters.WaitAsync(new Policy(this), _readReleaser, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Takes a read lock, waiting at most <paramref name="timeout"/>.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/> to take it now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the read lock when disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The lock was not taken within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was taken.</exception>
    public ValueTask<Releaser> AcquireReadAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return _waiters.WaitAsync(new Policy(this), _readReleaser, timeout, cancellationToken);
    }

    /// <summary>Takes the write lock, waiting in FIFO order until no reader or writer holds the lock.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the write lock when disposed.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was taken.</exception>
    public ValueTask<Releaser> AcquireWriteAsync(CancellationToken cancellationToken = default) =>
        _waiters.WaitAsync(new Policy(this), _writeReleaser, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Takes the write lock, waiting at most <paramref name="timeout"/>.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/> to take it now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the write lock when disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The lock was not taken within <paramref name="timeout"/>; the writer holds nothing.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was taken.</exception>
    public ValueTask<Releaser> AcquireWriteAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return _waiters.WaitAsync(new Policy(this), _writeReleaser, timeout, cancellationToken);
    }

    /// <summary>Takes a read lock if that is possible without waiting and nobody waits.</summary>
    /// <param name="releaser">When this returns true, releases the read lock when disposed.</param>
    /// <returns>True if the read lock was taken.</returns>
    public bool TryAcquireRead(out Releaser releaser) => _waiters.TryNow(new Policy(this), _readReleaser, out releaser, out _);

    /// <summary>Takes the write lock if nobody holds or waits for the lock.</summary>
    /// <param name="releaser">When this returns true, releases the write lock when disposed.</param>
    /// <returns>True if the write lock was taken.</returns>
    public bool TryAcquireWrite(out Releaser releaser) => _waiters.TryNow(new Policy(this), _writeReleaser, out releaser, out _);

    /// <summary>Releases one read lock, admitting waiters it was holding back.</summary>
    /// <exception cref="SynchronizationLockException">No read lock is held.</exception>
    public void ReleaseRead() => Release(writer: false);

    /// <summary>Releases the write lock, admitting the next writer or the readers at the head of the line.</summary>
    /// <exception cref="SynchronizationLockException">The write lock is not held.</exception>
    public void ReleaseWrite() => Release(writer: true);

    private void Release(bool writer)
    {
        while (!TryReleaseFast(writer) && !TryReleaseContended(writer))
        {
            // The waiters left between the two looks: the fast path applies again.
        }
    }

    /// <summary>Releases without the lock while nobody waits; false when someone does (<see cref="Contended"/>).</summary>
    private bool TryReleaseFast(bool writer)
    {
        int state = Volatile.Read(ref _state);
        while (state != Contended)
        {
            if (!Holds(state, writer))
            {
                ThrowHelper.ThrowSynchronizationLock_NotHeld();
            }

            int seen = Interlocked.CompareExchange(ref _state, Released(state, writer), state);
            if (seen == state)
            {
                return true;
            }

            state = seen;
        }

        return false;
    }

    /// <summary>Releases under the lock while someone waits, admitting the waiters that can enter now; false (changing
    /// nothing) when nobody waits any more.</summary>
    private bool TryReleaseContended(bool writer)
    {
        var completions = default(Completions<Releaser>);
        lock (_sync)
        {
            if (_state != Contended)
            {
                return false;
            }

            if (!Holds(_held, writer))
            {
                ThrowHelper.ThrowSynchronizationLock_NotHeld();
            }

            _held = Released(_held, writer);
            AdmitWaiters(ref completions);
        }

        completions.CompleteAll();
        return true;
    }

    /// <summary>
    /// Takes the lock (a read lock, or the write lock for <paramref name="writer"/>) if that can be done now, while
    /// nobody waits; by compare-and-swap, so also without the lock. When it cannot and <paramref name="willWait"/> (the
    /// caller holds the lock and joins the line next), the state moves to <see cref="Contended"/>.
    /// </summary>
    private bool TryEnter(bool writer, bool willWait)
    {
        int state = Volatile.Read(ref _state);
        while (state != Contended)
        {
            bool can = CanEnter(state, writer);
            if (!can && !willWait)
            {
                return false;
            }

            if (!can)
            {
                _held = state;
            }

            int seen = Interlocked.CompareExchange(ref _state, can ? Entered(state, writer) : Contended, state);
            if (seen == state)
            {
                return can;
            }

            state = seen;
        }

        return false;
    }

    /// <summary>Takes the lock <paramref name="request"/> stands for, if that can be done now, ignoring the line, while
    /// the state is <see cref="Contended"/>. Lock held.</summary>
    private bool TryEnterContended(Releaser request)
    {
        if (!CanEnter(_held, request.IsWriter))
        {
            return false;
        }

        _held = Entered(_held, request.IsWriter);
        return true;
    }

    /// <summary>Whether a reader (or a writer) can enter while <paramref name="held"/> is held.</summary>
    private bool CanEnter(int held, bool writer) => writer ? held == 0 : held >= 0 && held < _maxReaders;

    /// <summary>What is held once a reader (or a writer) entered while <paramref name="held"/> was.</summary>
    private static int Entered(int held, bool writer) => writer ? WriterHeld : held + 1;

    /// <summary>Whether <paramref name="held"/> includes a read lock (or the write lock) to release.</summary>
    private static bool Holds(int held, bool writer) => writer ? held == WriterHeld : held > 0;

    /// <summary>What is held once a read lock (or the write lock) was released from <paramref name="held"/>.</summary>
    private static int Released(int held, bool writer) => writer ? 0 : held - 1;

    /// <summary>Admits waiters from the head of the line for as long as the head can enter; once the line is empty,
    /// reopens the fast paths. Lock held, state <see cref="Contended"/>.</summary>
    private void AdmitWaiters(ref Completions<Releaser> completions)
    {
        Debug.Assert(_state == Contended, "waiters are admitted only while the lock is contended");
        while (_waiters.Head is { } head && TryEnterContended(head.Value))
        {
            _waiters.Dequeue();
            _waiters.Serve(head, head.Value, ref completions);
        }

        if (_waiters.IsEmpty)
        {
            Volatile.Write(ref _state, _held);
        }
    }

    /// <summary>Describes the state, like Toro's <c>__str__</c>: <c>AsyncReaderWriterLock(readers=2, writer=False, waiters=1)</c>; with a
    /// <see cref="Name"/> it comes first: <c>AsyncReaderWriterLock(name="routes", readers=2, writer=False, waiters=1)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString()
    {
        lock (_sync)
        {
            return Display.Format("AsyncReaderWriterLock", Name, $"readers={CurrentReaderCount}, writer={IsWriteLockHeld}, waiters={_waiters.Count}");
        }
    }

    /// <summary>The engine's view: a caller is served when it can enter now; a waiter that gives up may unblock others.</summary>
    private readonly struct Policy(AsyncReaderWriterLock owner) : IWaitPolicy<Releaser>
    {
        public bool HasLockFreePath => true;

        public bool TryAcquire(Releaser offer, bool willWait, ref Completions<Releaser> completions, out Releaser result)
        {
            result = offer;
            return owner.TryEnter(offer.IsWriter, willWait);
        }

        public Exception? Refusal() => null;

        public void OnWaiterLeft(ref Completions<Releaser> completions) =>
            owner.AdmitWaiters(ref completions); // a writer that gave up may have been holding back readers; or none is left
    }

    /// <summary>Releases a read lock or the write lock when disposed. Dispose it exactly once; <c>default(Releaser)</c> does nothing.</summary>
    public readonly struct Releaser : IDisposable
    {
        private readonly AsyncReaderWriterLock? _owner;
        private readonly bool _writer;

        internal Releaser(AsyncReaderWriterLock owner, bool writer)
        {
            _owner = owner;
            _writer = writer;
        }

        /// <summary>Whether this releaser releases the write lock (rather than a read lock).</summary>
        public bool IsWriter => _writer;

        /// <summary>Releases the lock this releaser stands for.</summary>
        /// <remarks>Dispose each releaser exactly once. One disposed again while others hold a lock of its kind cannot be
        /// told from one of their releases: a write releaser disposed again after another writer has taken the lock
        /// releases that writer's lock, and a read releaser disposed again while other readers hold releases one of
        /// their read locks, as a second <c>Release</c> of a semaphore would. Neither throws.</remarks>
        /// <exception cref="SynchronizationLockException">No lock of this kind is held (the write lock, or any read lock),
        /// as when this releaser was disposed before and no lock of its kind has been taken since.</exception>
        public void Dispose() => _owner?.Release(_writer);
    }
}
