using System.Runtime.CompilerServices;

namespace AsyncIterTools.Tests;

/// <summary>How a test source produces its items.</summary>
public enum SourceMode
{
    /// <summary>Every MoveNextAsync completes synchronously.</summary>
    Synchronous,

    /// <summary>Every MoveNextAsync first yields to the scheduler (Task.Yield), so it completes asynchronously.</summary>
    Yielding,
}

/// <summary>
/// An <see cref="IAsyncEnumerable{T}"/> over a fixed list that records how it is used: enumerators created,
/// items produced, disposals, and the token each enumerator was given. It can fail at a given position.
/// </summary>
public sealed class TrackingSource<T> : IAsyncEnumerable<T>
{
    private readonly IReadOnlyList<T> _items;
    private readonly SourceMode _mode;
    private readonly int _failAt;
    private readonly Exception? _failure;
    private int _enumerators;
    private int _disposals;
    private int _produced;
    private int _moveNextCalls;
    private readonly object _watchLock = new();
    private (int Count, TaskCompletionSource Signal)? _watch;

    public TrackingSource(IEnumerable<T> items, SourceMode mode = SourceMode.Synchronous, int failAt = -1, Exception? failure = null)
    {
        // A list is used as is (Sources.Endless passes Range(0, int.MaxValue), which must not be copied).
        _items = items as IReadOnlyList<T> ?? items.ToList();
        _mode = mode;
        _failAt = failAt;
        _failure = failure ?? (failAt >= 0 ? new InvalidOperationException("source failure") : null);
    }

    /// <summary>How many enumerators were created.</summary>
    public int Enumerators => Volatile.Read(ref _enumerators);

    /// <summary>How many times an enumerator was disposed (a second dispose of one enumerator counts again).</summary>
    public int Disposals => Volatile.Read(ref _disposals);

    /// <summary>How many items were handed out.</summary>
    public int Produced => Volatile.Read(ref _produced);

    /// <summary>Completes once at least <paramref name="count"/> items were handed out (one watch at a time).</summary>
    public Task WhenProduced(int count)
    {
        lock (_watchLock)
        {
            if (Produced >= count)
            {
                return Task.CompletedTask;
            }

            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _watch = (count, signal);
            return signal.Task;
        }
    }

    /// <summary>How many times MoveNextAsync was called.</summary>
    public int MoveNextCalls => Volatile.Read(ref _moveNextCalls);

    /// <summary>The token the most recent enumerator was given.</summary>
    public CancellationToken LastToken { get; private set; }

    /// <summary>The exception thrown at <c>failAt</c>, if any.</summary>
    public Exception? Failure => _failure;

    /// <summary>Thrown by every enumerator's <c>DisposeAsync</c>, after it disposed; null for none.</summary>
    public Exception? DisposeFailure { get; init; }

    public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref _enumerators);
        LastToken = cancellationToken;
        return new CountingEnumerator(Enumerate(cancellationToken).GetAsyncEnumerator(cancellationToken), this);
    }

    /// <summary>Counts DisposeAsync calls themselves (also one made before the first MoveNextAsync, which a compiler
    /// iterator's own finally block would not see).</summary>
    private sealed class CountingEnumerator(IAsyncEnumerator<T> inner, TrackingSource<T> owner) : IAsyncEnumerator<T>
    {
        public T Current => inner.Current;

        public ValueTask<bool> MoveNextAsync() => inner.MoveNextAsync();

        public async ValueTask DisposeAsync()
        {
            Interlocked.Increment(ref owner._disposals);
            await inner.DisposeAsync();
            if (owner.DisposeFailure is { } failure)
            {
                throw failure;
            }
        }
    }

    private async IAsyncEnumerable<T> Enumerate([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        for (int i = 0; ; i++)
        {
            Interlocked.Increment(ref _moveNextCalls);
            if (_mode == SourceMode.Yielding)
            {
                await Task.Yield();
            }

            cancellationToken.ThrowIfCancellationRequested();
            if (i == _failAt)
            {
                throw _failure!;
            }

            if (i >= _items.Count)
            {
                yield break;
            }

            int produced = Interlocked.Increment(ref _produced);
            lock (_watchLock)
            {
                if (_watch is { } watch && produced >= watch.Count)
                {
                    _watch = null;
                    watch.Signal.SetResult();
                }
            }

            yield return _items[i];
        }
    }
}

/// <summary>Shorthands for building test sources.</summary>
public static class Sources
{
    public static TrackingSource<T> Of<T>(SourceMode mode, params T[] items) => new(items, mode);

    public static TrackingSource<T> From<T>(IEnumerable<T> items, SourceMode mode = SourceMode.Synchronous) => new(items, mode);

    public static TrackingSource<T> Failing<T>(IEnumerable<T> items, int failAt, SourceMode mode = SourceMode.Synchronous, Exception? failure = null) =>
        new(items, mode, failAt, failure);

    /// <summary>An endless source 0, 1, 2, ... that counts what it produced.</summary>
    public static TrackingSource<int> Endless(SourceMode mode = SourceMode.Synchronous) => new(Enumerable.Range(0, int.MaxValue), mode);

    /// <summary>
    /// A bare compiler iterator over <paramref name="items"/> that ignores any token it is given (most real sources do
    /// not check it between items): cancellation is then up to the operator.
    /// </summary>
    public static async IAsyncEnumerable<T> IgnoringToken<T>(IEnumerable<T> items)
    {
        foreach (T item in items)
        {
            yield return item;
        }

        await Task.CompletedTask;
    }

    /// <summary>Reads <paramref name="sequence"/> to its end, or leaves after its first item when <paramref name="earlyBreak"/>.</summary>
    public static async Task ReadAsync<T>(IAsyncEnumerable<T> sequence, bool earlyBreak)
    {
        await foreach (T _ in sequence)
        {
            if (earlyBreak)
            {
                break;
            }
        }
    }

    /// <summary>Work for GatherAsync and AsCompleted: a piece failing with <paramref name="failure"/> (or, when null, one
    /// returning 1), then one returning 2; the sequence's disposal throws <paramref name="disposal"/>.</summary>
    public static IEnumerable<Func<CancellationToken, Task<int>>> DisposingWithFailure(Exception? failure, Exception disposal)
    {
        try
        {
            yield return _ => failure is null ? Task.FromResult(1) : Task.FromException<int>(failure);
            yield return _ => Task.FromResult(2);
        }
        finally
        {
            throw disposal;
        }
    }

    /// <summary>Work for GatherAsync and AsCompleted: a piece that signals <paramref name="started"/> and runs until
    /// cancelled, then one returning 2; the sequence's disposal throws <paramref name="disposal"/>.</summary>
    public static IEnumerable<Func<CancellationToken, Task<int>>> RunningUntilCancelled_DisposingWithFailure(TaskCompletionSource started, Exception disposal)
    {
        try
        {
            yield return async ct =>
            {
                started.TrySetResult();
                await new TaskCompletionSource().Task.WaitAsync(ct);
                return 1;
            };
            yield return _ => Task.FromResult(2);
        }
        finally
        {
            throw disposal;
        }
    }

    /// <summary>Both modes, for <c>[Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]</c>.</summary>
    public static TheoryData<SourceMode> Modes => new() { SourceMode.Synchronous, SourceMode.Yielding };
}

/// <summary>How a <see cref="HostileSource"/> fails.</summary>
public enum Hostility
{
    GetEnumeratorThrows,
    MoveNextThrowsSynchronously,
    MoveNextFaulted,
    CurrentThrows,
    DisposeThrows,
}

/// <summary>
/// A source 0, 1, ... (<c>items</c> of them) that fails in one way: its <c>GetAsyncEnumerator</c>, its move to item
/// <c>at</c> (by throwing, or by a faulted <see cref="ValueTask{TResult}"/>), its <c>Current</c> at item <c>at</c>, or
/// its disposal. Counts enumerators and disposals.
/// </summary>
public sealed class HostileSource(Hostility how, Exception failure, int at = 1, int items = 3) : IAsyncEnumerable<int>
{
    private int _enumerators;
    private int _disposals;

    public int Enumerators => Volatile.Read(ref _enumerators);

    public int Disposals => Volatile.Read(ref _disposals);

    public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        if (how == Hostility.GetEnumeratorThrows)
        {
            throw failure;
        }

        Interlocked.Increment(ref _enumerators);
        return new Enumerator(this);
    }

    private sealed class Enumerator(HostileSource owner) : IAsyncEnumerator<int>
    {
        private int _position = -1;

        public int Current => owner.Fails(Hostility.CurrentThrows, _position) ? throw owner.Failure : _position;

        public ValueTask<bool> MoveNextAsync()
        {
            _position++;
            if (owner.Fails(Hostility.MoveNextThrowsSynchronously, _position))
            {
                throw owner.Failure;
            }

            return owner.Fails(Hostility.MoveNextFaulted, _position)
                ? ValueTask.FromException<bool>(owner.Failure)
                : new ValueTask<bool>(_position < owner.Items);
        }

        public ValueTask DisposeAsync()
        {
            Interlocked.Increment(ref owner._disposals);
            return owner.How == Hostility.DisposeThrows ? ValueTask.FromException(owner.Failure) : default;
        }
    }

    private Hostility How => how;

    private Exception Failure => failure;

    private int Items => items;

    private bool Fails(Hostility way, int position) => how == way && position == at;
}

/// <summary>A sequence of work whose enumerator, not an iterator, throws <paramref name="disposal"/> from
/// <c>Dispose</c>, also after its end.</summary>
public sealed class EnumeratorDisposingWithFailure(Exception disposal, params Func<CancellationToken, Task<int>>[] work) : IEnumerable<Func<CancellationToken, Task<int>>>
{
    private int _disposals;

    public int Disposals => Volatile.Read(ref _disposals);

    public IEnumerator<Func<CancellationToken, Task<int>>> GetEnumerator() => new Enumerator(this);

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

    private sealed class Enumerator(EnumeratorDisposingWithFailure owner) : IEnumerator<Func<CancellationToken, Task<int>>>
    {
        private int _index = -1;

        public Func<CancellationToken, Task<int>> Current => owner.Work[_index];

        object System.Collections.IEnumerator.Current => Current;

        public bool MoveNext() => ++_index < owner.Work.Length;

        public void Reset() => throw new NotSupportedException();

        public void Dispose()
        {
            Interlocked.Increment(ref owner._disposals);
            throw owner.Disposal;
        }
    }

    private Func<CancellationToken, Task<int>>[] Work => work;

    private Exception Disposal => disposal;
}
