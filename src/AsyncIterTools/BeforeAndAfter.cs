using System.Diagnostics;

namespace AsyncIterTools;

public static partial class AsyncIter
{
    /// <summary>
    /// Splits the source at the first item that fails <paramref name="predicate"/>: <c>Before</c> yields the leading
    /// items that pass it, <c>After</c> yields that first failing item and everything following it (Python's
    /// <c>more_itertools.before_and_after</c>).
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="predicate">Called on leading items, in order, until it first returns <see langword="false"/>; never after that.</param>
    /// <returns>
    /// Two single-use sequences that share one enumeration of <paramref name="source"/>. Each may be enumerated once;
    /// a second <c>GetAsyncEnumerator</c> on the same half throws <see cref="InvalidOperationException"/>.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="predicate"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// <para>
    /// Execution is deferred: the source is enumerated once, when either half first reads from it, with that half's
    /// enumeration token. The halves may be read in any order and from any thread (reads of the shared source are
    /// serialised). Unlike Python's version, <c>After</c> may be read first: it reads past the leading items and keeps
    /// them for <c>Before</c>, unless <c>Before</c> has already been disposed.
    /// </para>
    /// <para>
    /// A failure of the source or of <paramref name="predicate"/>, including cancellation of the token the source was
    /// opened with, surfaces in the half that was reading and again in any half that reads the source later; items
    /// already kept for <c>Before</c> are still delivered first. The other half's token ends its wait for the half that
    /// is reading and is checked before each of its reads and kept items; a read of the source that half has started
    /// observes only the token the source was opened with.
    /// </para>
    /// <para>
    /// Disposal: the source is disposed exactly once, as soon as it has ended or failed, or else when both halves'
    /// enumerators have been disposed. A half that is never enumerated keeps the source open until the other half has
    /// read it to the end; to release it early, dispose an enumerator of each half (disposing one that was never
    /// advanced is enough; it never waits for the other half's pending read).
    /// </para>
    /// </remarks>
    public static (IAsyncEnumerable<T> Before, IAsyncEnumerable<T> After) BeforeAndAfter<T>(this IAsyncEnumerable<T> source, Func<T, bool> predicate)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(predicate);
        return source.BeforeAndAfter((item, _) => new ValueTask<bool>(predicate(item)));
    }

    /// <summary>
    /// Splits the source at the first item that fails an asynchronous <paramref name="predicate"/>: <c>Before</c>
    /// yields the leading items that pass it, <c>After</c> yields that first failing item and everything following it.
    /// </summary>
    /// <typeparam name="T">The type of the items.</typeparam>
    /// <param name="source">The source sequence.</param>
    /// <param name="predicate">Called on leading items, in order, until it first returns <see langword="false"/>; never
    /// after that. Calls never overlap; each receives the token the source was opened with.</param>
    /// <returns>
    /// Two single-use sequences that share one enumeration of <paramref name="source"/>. Each may be enumerated once;
    /// a second <c>GetAsyncEnumerator</c> on the same half throws <see cref="InvalidOperationException"/>.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="predicate"/> is <see langword="null"/>.</exception>
    /// <remarks>
    /// The same as <see cref="BeforeAndAfter{T}(IAsyncEnumerable{T}, Func{T, bool})"/>; the predicate is awaited as a
    /// read of the source is (the other half waits for it).
    /// </remarks>
    public static (IAsyncEnumerable<T> Before, IAsyncEnumerable<T> After) BeforeAndAfter<T>(this IAsyncEnumerable<T> source, Func<T, CancellationToken, ValueTask<bool>> predicate)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(predicate);
        var splitter = new BeforeAndAfterSplitter<T>(source, predicate);
        return (new BeforeAndAfterSplitter<T>.Half(splitter, isBefore: true), new BeforeAndAfterSplitter<T>.Half(splitter, isBefore: false));
    }

    /// <summary>The state shared by the two halves of one BeforeAndAfter call.</summary>
    [DebuggerDisplay("pivotFound = {_pivotFound}, kept = {_kept.Count}, sourceClosed = {_sourceClosed}")]
    private sealed class BeforeAndAfterSplitter<T>
    {
        private const int NotStarted = 0;
        private const int Started = 1;
        private const int Released = 2;

        private readonly IAsyncEnumerable<T> _source;
        private readonly Func<T, CancellationToken, ValueTask<bool>> _predicate;

        /// <summary>Serialises every access to the fields below but the two states; held across awaits of the source, never across a yield to the consumer.</summary>
        private readonly SemaphoreSlim _gate = new(1, 1);

        /// <summary>Leading (passing) items read by After that Before has not delivered yet, oldest first.</summary>
        private readonly Queue<T> _kept = new();

        /// <summary>The shared source enumerator: null before the first read and after it is disposed.</summary>
        private IAsyncEnumerator<T>? _enumerator;

        /// <summary>The item the last successful <see cref="ReadSourceAsync"/> read (a <c>Current</c> that throws fails the
        /// read, as a failing move does).</summary>
        private T _read = default!;

        /// <summary>The token the source enumerator was opened with (that of the half that read first).</summary>
        private CancellationToken _sourceToken;

        /// <summary>True once the source has been opened and then closed; it is never reopened.</summary>
        private bool _sourceClosed;

        /// <summary>True once the first failing item was read: Before ends when <see cref="_kept"/> is empty.</summary>
        private bool _pivotFound;

        /// <summary>True while the first failing item, read by Before, waits in <see cref="_pivot"/> for After.</summary>
        private bool _pivotPending;

        private T _pivot = default!;

        /// <summary>The failure of the source or predicate, replayed to any later read of the source.</summary>
        private ExceptionDispatchInfo? _failure;

        /// <summary>Each half's <see cref="NotStarted"/>, <see cref="Started"/> or <see cref="Released"/>: changed with
        /// interlocked operations and read without the gate (the only fields that are).</summary>
        private int _beforeState;
        private int _afterState;

        public BeforeAndAfterSplitter(IAsyncEnumerable<T> source, Func<T, CancellationToken, ValueTask<bool>> predicate)
        {
            _source = source;
            _predicate = predicate;
        }

        /// <summary>Marks a half as enumerated; each half is single-use.</summary>
        public void Start(bool isBefore)
        {
            ref int state = ref isBefore ? ref _beforeState : ref _afterState;
            if (Interlocked.CompareExchange(ref state, Started, NotStarted) != NotStarted)
            {
                throw new InvalidOperationException($"The {(isBefore ? "Before" : "After")} half of BeforeAndAfter can be enumerated only once.");
            }
        }

        public async ValueTask<bool> MoveNextBeforeAsync(Half.Enumerator consumer, CancellationToken cancellationToken)
        {
            await EnterAsync(cancellationToken);
            try
            {
                if (_kept.Count > 0)
                {
                    cancellationToken.ThrowIfCancellationRequested(); // handed out without awaiting the source
                    consumer.SetCurrent(_kept.Dequeue());
                    return true;
                }

                if (_pivotFound)
                {
                    return false;
                }

                if (!await ReadSourceAsync(cancellationToken))
                {
                    return false;
                }

                T item = _read;
                if (await TestAsync(item))
                {
                    consumer.SetCurrent(item);
                    return true;
                }

                _pivotFound = true;
                _pivotPending = true;
                _pivot = item;
                return false;
            }
            finally
            {
                Exit();
            }
        }

        public async ValueTask<bool> MoveNextAfterAsync(Half.Enumerator consumer, CancellationToken cancellationToken)
        {
            await EnterAsync(cancellationToken);
            try
            {
                if (_pivotPending)
                {
                    cancellationToken.ThrowIfCancellationRequested(); // handed out without awaiting the source
                    _pivotPending = false;
                    consumer.SetCurrent(_pivot);
                    _pivot = default!;
                    return true;
                }

                while (!_pivotFound)
                {
                    // Before has not reached the split yet: read past the leading items, keeping them for Before.
                    if (!await ReadSourceAsync(cancellationToken))
                    {
                        return false;
                    }

                    T item = _read;
                    if (!await TestAsync(item))
                    {
                        _pivotFound = true;
                        consumer.SetCurrent(item);
                        return true;
                    }

                    if (Volatile.Read(ref _beforeState) != Released)
                    {
                        _kept.Enqueue(item);
                    }
                }

                if (!await ReadSourceAsync(cancellationToken))
                {
                    return false;
                }

                consumer.SetCurrent(_read);
                return true;
            }
            finally
            {
                Exit();
            }
        }

        /// <summary>
        /// Marks a half released. The source is closed once both are; until then, what only the released half needed
        /// (kept items, or the pivot) is dropped now if the gate is free, or else as the other half's read that holds
        /// it leaves (<see cref="Exit"/>), so that disposing a half never waits for the other half's pending read.
        /// </summary>
        public ValueTask ReleaseAsync(bool isBefore)
        {
            // A full fence each side: of two halves released at once, at least the second sees the first.
            Interlocked.Exchange(ref isBefore ? ref _beforeState : ref _afterState, Released);
            if (Volatile.Read(ref isBefore ? ref _afterState : ref _beforeState) == Released)
            {
                return CloseAsync(); // both enumerators disposed, so neither can be reading: the gate is free or soon will be
            }

            if (_gate.Wait(0))
            {
                Exit();
            }

            return default;

            async ValueTask CloseAsync()
            {
                await _gate.WaitAsync();
                try
                {
                    await CloseSourceAsync();
                }
                finally
                {
                    Exit();
                }
            }
        }

        /// <summary>Leaves the gate, dropping first what a released half no longer needs: the kept items once Before is
        /// released, the pivot once After is.</summary>
        private void Exit()
        {
            if (Volatile.Read(ref _beforeState) == Released)
            {
                _kept.Clear();
            }

            if (Volatile.Read(ref _afterState) == Released)
            {
                _pivotPending = false;
                _pivot = default!;
            }

            _gate.Release();
        }

        /// <summary>
        /// Takes the gate. When it is free it is taken without looking at the token, so that a read with a cancelled
        /// token still reaches <see cref="ReadSourceAsync"/>, which decides whether the cancellation ends the source.
        /// </summary>
        private ValueTask EnterAsync(CancellationToken cancellationToken) =>
            _gate.Wait(0) ? default : new ValueTask(_gate.WaitAsync(cancellationToken));

        /// <summary>Advances the shared source and reads its item into <see cref="_read"/>; on its end or failure closes
        /// it. Caller holds the gate.</summary>
        private async ValueTask<bool> ReadSourceAsync(CancellationToken cancellationToken)
        {
            _failure?.Throw();
            if (_sourceClosed)
            {
                return false;
            }

            if (_enumerator is not null && _sourceToken.IsCancellationRequested)
            {
                // The source observes this token, so it cannot go on: fail the shared enumeration and release it now.
                _failure = ExceptionDispatchInfo.Capture(new OperationCanceledException(_sourceToken));
                await CloseSourceAsync();
                _failure.Throw();
            }

            cancellationToken.ThrowIfCancellationRequested();
            bool hasItem;
            try
            {
                if (_enumerator is null)
                {
                    _sourceToken = cancellationToken;
                    _enumerator = _source.GetAsyncEnumerator(cancellationToken);
                }

                hasItem = await _enumerator.MoveNextAsync();
                _read = hasItem ? _enumerator.Current : default!;
            }
            catch (Exception ex)
            {
                _failure = ExceptionDispatchInfo.Capture(ex);
                await CloseSourceAsync();
                throw;
            }

            if (!hasItem)
            {
                await CloseSourceAsync();
            }

            return hasItem;
        }

        /// <summary>Applies the predicate; a throwing predicate fails (and closes) the shared enumeration. Caller holds the gate.</summary>
        private async ValueTask<bool> TestAsync(T item)
        {
            try
            {
                return await _predicate(item, _sourceToken);
            }
            catch (Exception ex)
            {
                _failure = ExceptionDispatchInfo.Capture(ex);
                await CloseSourceAsync();
                throw;
            }
        }

        /// <summary>Disposes the source enumerator once, if it was opened; a failure of its disposal fails the shared
        /// enumeration (for both halves), replacing a failure of the read it followed, as in an <c>await foreach</c>.
        /// Caller holds the gate.</summary>
        private async ValueTask CloseSourceAsync()
        {
            _sourceClosed = true;
            IAsyncEnumerator<T>? enumerator = _enumerator;
            _enumerator = null;
            if (enumerator is not null)
            {
                try
                {
                    await enumerator.DisposeAsync();
                }
                catch (Exception ex)
                {
                    _failure = ExceptionDispatchInfo.Capture(ex);
                    throw;
                }
            }
        }

        /// <summary>One half of the split.</summary>
        internal sealed class Half(BeforeAndAfterSplitter<T> splitter, bool isBefore) : IAsyncEnumerable<T>
        {
            public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken cancellationToken = default)
            {
                splitter.Start(isBefore);
                return new Enumerator(splitter, isBefore, cancellationToken);
            }

            /// <summary>The single enumerator of a half; delegates to the shared splitter.</summary>
            internal sealed class Enumerator(BeforeAndAfterSplitter<T> splitter, bool isBefore, CancellationToken cancellationToken) : IAsyncEnumerator<T>
            {
                /// <summary>True once MoveNextAsync returned false or the enumerator was disposed.</summary>
                private bool _finished;

                /// <summary>True once this half was reported released to the splitter (dispose is idempotent).</summary>
                private bool _released;

                public T Current { get; private set; } = default!;

                public void SetCurrent(T value) => Current = value;

                public async ValueTask<bool> MoveNextAsync()
                {
                    if (_finished)
                    {
                        return false;
                    }

                    bool hasItem = isBefore
                        ? await splitter.MoveNextBeforeAsync(this, cancellationToken)
                        : await splitter.MoveNextAfterAsync(this, cancellationToken);
                    if (!hasItem)
                    {
                        _finished = true;
                        Current = default!;
                    }

                    return hasItem;
                }

                public ValueTask DisposeAsync()
                {
                    _finished = true;
                    if (_released)
                    {
                        return default;
                    }

                    _released = true;
                    return splitter.ReleaseAsync(isBefore);
                }
            }
        }
    }
}
