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
[DebuggerDisplay("Readers = {CurrentReaderCount}, IsWriteLockHeld = {IsWriteLockHeld}")]
public sealed class AsyncReaderWriterLock : IWaitOwner<AsyncReaderWriterLock.Releaser>
{
    private const int ReaderKind = 0;
    private const int WriterKind = 1;

    private readonly Lock _sync = new();

    /// <summary>Readers and writers in arrival order; a node's <c>Kind</c> says which.</summary>
    private readonly WaitQueue<Releaser> _waiters;

    private readonly Releaser _readReleaser;
    private readonly Releaser _writeReleaser;
    private readonly int _maxReaders;

    /// <summary>Read locks held now. Guarded by <see cref="_sync"/>; zero while <see cref="_writerHeld"/>.</summary>
    private int _readers;

    /// <summary>Whether the write lock is held. Guarded by <see cref="_sync"/>.</summary>
    private bool _writerHeld;

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
        _waiters = new WaitQueue<Releaser>(_sync, timeProvider ?? TimeProvider.System, this);
    }

    /// <summary>The most read locks held at once.</summary>
    public int MaxReaders => _maxReaders;

    /// <summary>Read locks held now (a snapshot).</summary>
    public int CurrentReaderCount
    {
        get
        {
            lock (_sync)
            {
                return _readers;
            }
        }
    }

    /// <summary>Whether the write lock is held now (a snapshot).</summary>
    public bool IsWriteLockHeld
    {
        get
        {
            lock (_sync)
            {
                return _writerHeld;
            }
        }
    }

    /// <summary>The number of callers waiting (a snapshot).</summary>
    internal int WaiterCount
    {
        get
        {
            lock (_sync)
            {
                return _waiters.Count;
            }
        }
    }

    /// <summary>Takes a read lock, waiting in FIFO order behind any earlier writer.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the read lock when disposed.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was taken.</exception>
    public ValueTask<Releaser> AcquireReadAsync(CancellationToken cancellationToken = default) =>
        Acquire(ReaderKind, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Takes a read lock, waiting at most <paramref name="timeout"/>.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/> to take it now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the read lock when disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The lock was not taken within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was taken.</exception>
    public ValueTask<Releaser> AcquireReadAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowHelper.ValidateTimeout(timeout);
        return Acquire(ReaderKind, timeout, cancellationToken);
    }

    /// <summary>Takes the write lock, waiting in FIFO order until no reader or writer holds the lock.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the write lock when disposed.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was taken.</exception>
    public ValueTask<Releaser> AcquireWriteAsync(CancellationToken cancellationToken = default) =>
        Acquire(WriterKind, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Takes the write lock, waiting at most <paramref name="timeout"/>.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/> to take it now or time out now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A <see cref="Releaser"/> that releases the write lock when disposed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The lock was not taken within <paramref name="timeout"/>; the writer holds nothing.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the lock was taken.</exception>
    public ValueTask<Releaser> AcquireWriteAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowHelper.ValidateTimeout(timeout);
        return Acquire(WriterKind, timeout, cancellationToken);
    }

    /// <summary>Takes a read lock if that is possible without waiting and nobody waits.</summary>
    /// <param name="releaser">When this returns true, releases the read lock when disposed.</param>
    /// <returns>True if the read lock was taken.</returns>
    public bool TryAcquireRead(out Releaser releaser)
    {
        lock (_sync)
        {
            if (CanEnter(ReaderKind) && _waiters.IsEmpty)
            {
                _readers++;
                releaser = _readReleaser;
                return true;
            }
        }

        releaser = default;
        return false;
    }

    /// <summary>Takes the write lock if nobody holds or waits for the lock.</summary>
    /// <param name="releaser">When this returns true, releases the write lock when disposed.</param>
    /// <returns>True if the write lock was taken.</returns>
    public bool TryAcquireWrite(out Releaser releaser)
    {
        lock (_sync)
        {
            if (CanEnter(WriterKind) && _waiters.IsEmpty)
            {
                _writerHeld = true;
                releaser = _writeReleaser;
                return true;
            }
        }

        releaser = default;
        return false;
    }

    /// <summary>Releases one read lock, admitting waiters it was holding back.</summary>
    /// <exception cref="SynchronizationLockException">No read lock is held.</exception>
    public void ReleaseRead() => Release(writer: false);

    /// <summary>Releases the write lock, admitting the next writer or the readers at the head of the line.</summary>
    /// <exception cref="SynchronizationLockException">The write lock is not held.</exception>
    public void ReleaseWrite() => Release(writer: true);

    private ValueTask<Releaser> Acquire(int kind, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<Releaser>(cancellationToken);
        }

        WaitNode<Releaser> node;
        lock (_sync)
        {
            if (_waiters.IsEmpty && CanEnter(kind))
            {
                return new ValueTask<Releaser>(Enter(kind));
            }

            if (timeout == TimeSpan.Zero)
            {
                return ValueTask.FromException<Releaser>(ThrowHelper.TimeoutNow());
            }

            node = _waiters.Enqueue(kind: kind);
        }

        return _waiters.Arm(node, timeout, cancellationToken);
    }

    private void Release(bool writer)
    {
        var completions = default(Completions<Releaser>);
        lock (_sync)
        {
            if (writer ? !_writerHeld : _readers == 0)
            {
                ThrowHelper.ThrowSynchronizationLock_NotHeld();
            }

            if (writer)
            {
                _writerHeld = false;
            }
            else
            {
                _readers--;
            }

            AdmitWaiters(ref completions);
        }

        completions.CompleteAll();
    }

    /// <summary>Whether a caller of <paramref name="kind"/> could hold the lock now, ignoring the queue. Lock held.</summary>
    private bool CanEnter(int kind) =>
        kind == WriterKind ? !_writerHeld && _readers == 0 : !_writerHeld && _readers < _maxReaders;

    /// <summary>Records a holder of <paramref name="kind"/> and returns its releaser. Lock held.</summary>
    private Releaser Enter(int kind)
    {
        if (kind == WriterKind)
        {
            _writerHeld = true;
            return _writeReleaser;
        }

        _readers++;
        return _readReleaser;
    }

    /// <summary>Admits waiters from the head of the line for as long as the head can enter. Lock held.</summary>
    private void AdmitWaiters(ref Completions<Releaser> completions)
    {
        while (_waiters.Head is { } head && CanEnter(head.Kind))
        {
            _waiters.Dequeue();
            head.SetResult(Enter(head.Kind));
            completions.Add(head);
        }
    }

    void IWaitOwner<Releaser>.OnWaiterLeft(ref Completions<Releaser> completions) =>
        AdmitWaiters(ref completions); // a writer that gave up may have been holding back readers

    /// <summary>Describes the state, like Toro's <c>__str__</c>: <c>AsyncReaderWriterLock(readers=2, writer=False, waiters=1)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString()
    {
        lock (_sync)
        {
            return $"AsyncReaderWriterLock(readers={_readers}, writer={_writerHeld}, waiters={_waiters.Count})";
        }
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
        /// <exception cref="SynchronizationLockException">That lock is not held (this releaser was disposed before).</exception>
        public void Dispose() => _owner?.Release(_writer);
    }
}
