using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace AsyncIterTools.Tests;

/// <summary>
/// Records how many pieces of work run at once: the peak in-flight count, start order, and how each ended.
/// <see cref="ReachedMax"/> completes the first time <c>max</c> pieces are in flight, so work gated on it proves the
/// operator reaches its limit, and nothing else (no delays) is needed to get there.
/// </summary>
public sealed class ConcurrencyProbe(int max = int.MaxValue)
{
    private readonly TaskCompletionSource<bool> _reachedMax = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<bool> _held = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _inFlight;
    private int _peak;
    private int _started;
    private int _finished;
    private int _cancelled;

    public ConcurrentQueue<int> StartOrder { get; } = new();

    public int InFlight => Volatile.Read(ref _inFlight);

    public int Peak => Volatile.Read(ref _peak);

    public int Started => Volatile.Read(ref _started);

    public int Finished => Volatile.Read(ref _finished);

    /// <summary>Pieces of work that ended by observing cancellation.</summary>
    public int Cancelled => Volatile.Read(ref _cancelled);

    /// <summary>Completes when <c>max</c> pieces are in flight at once.</summary>
    public Task ReachedMax => _reachedMax.Task;

    /// <summary>A gate for work to wait on that opens only in <see cref="AssertHeldAtMaxThenReleaseAsync"/>.</summary>
    public Task Held => _held.Task;

    /// <summary>
    /// Waits until <c>max</c> pieces of work parked on <see cref="Held"/> are in flight, asserts that no more than that
    /// were started (nothing finishes while they are held, so an operator that overshoots its limit is caught here,
    /// whatever the timing), then opens the gate.
    /// </summary>
    public async Task AssertHeldAtMaxThenReleaseAsync()
    {
        await ReachedMax.WaitAsync(TestWork.Bound);
        Started.Should().Be(max, "nothing more may start while the limit's worth of work is running");
        _held.SetResult(true);
    }

    public void Enter(int id)
    {
        StartOrder.Enqueue(id);
        Interlocked.Increment(ref _started);
        int now = Interlocked.Increment(ref _inFlight);
        AsyncTools.Testing.Peak.Raise(ref _peak, now); // qualified: this class has a Peak property

        if (now >= max)
        {
            _reachedMax.TrySetResult(true);
        }
    }

    public void Exit(bool cancelled = false)
    {
        if (cancelled)
        {
            Interlocked.Increment(ref _cancelled);
        }

        Interlocked.Increment(ref _finished);
        Interlocked.Decrement(ref _inFlight);
    }

    /// <summary>Work that enters, waits for <paramref name="gate"/> (or its token), exits, and returns <paramref name="id"/>.</summary>
    public Task<int> RunAsync(int id, Task gate, CancellationToken cancellationToken) =>
        TrackAsync(id, () => gate.WaitAsync(cancellationToken));

    /// <summary>Work that enters, yields the thread <paramref name="yields"/> times (observing its token after each),
    /// exits, and returns <paramref name="id"/>.</summary>
    public Task<int> YieldingAsync(int id, int yields, CancellationToken cancellationToken) =>
        TrackAsync(id, async () =>
        {
            for (int i = 0; i < yields; i++)
            {
                await Task.Yield();
                cancellationToken.ThrowIfCancellationRequested();
            }
        });

    /// <summary>Enters at once, runs <paramref name="body"/>, exits (counting a cancellation), returns <paramref name="id"/>.</summary>
    private async Task<int> TrackAsync(int id, Func<Task> body)
    {
        Enter(id);
        bool cancelled = false;
        try
        {
            await body();
            return id;
        }
        catch (OperationCanceledException)
        {
            cancelled = true;
            throw;
        }
        finally
        {
            Exit(cancelled);
        }
    }
}

/// <summary>Helpers shared by the concurrency tests.</summary>
public static class TestWork
{
    /// <summary>The bound for any await that could hang if the operator had a bug.</summary>
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Runs <paramref name="complete"/> (completing a gate) with no <see cref="SynchronizationContext"/>, so that the
    /// continuations it completes run inline, before it returns (under xunit's context the runtime would queue them).
    /// </summary>
    public static void CompleteInline(Action complete)
    {
        SynchronizationContext? context = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(null);
        try
        {
            complete();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(context);
        }
    }

    /// <summary>A piece of work that fails (with an <see cref="IOException"/>, as a client aborted by its token may) inside
    /// the cancellation of <paramref name="token"/>, as work that watches a token itself does.</summary>
    public static Task<int> FailsWhenCancelled(CancellationToken token)
    {
        var failed = new TaskCompletionSource<int>(); // continuations inline, in the token's callback
        token.Register(() => failed.TrySetException(new IOException("aborted by the token")));
        return failed.Task;
    }

    /// <summary>
    /// A single-use source of 0, 1, 2, ...: its first <paramref name="ready"/> moves complete at once, the next when
    /// <see cref="ReleaseMove"/> is called (or fails with <see cref="FailMove"/>), and then it ends. Counts its moves.
    /// </summary>
    public sealed class GatedMoveSource(int ready) : IAsyncEnumerable<int>, IAsyncEnumerator<int>
    {
        private readonly TaskCompletionSource<bool> _gate = new(); // continuations inline, where the gate completes
        private int _index = -1;

        public int Current => _index;

        public int Moves { get; private set; }

        public void ReleaseMove() => _gate.SetResult(true);

        public void FailMove(Exception failure) => _gate.SetException(failure);

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) => this;

        public ValueTask<bool> MoveNextAsync()
        {
            Moves++;
            _index++;
            return _index < ready ? new ValueTask<bool>(true) : _index == ready ? new ValueTask<bool>(_gate.Task) : new ValueTask<bool>(false);
        }

        public ValueTask DisposeAsync() => default;
    }

    /// <summary>A lazily enumerated sequence that records how many elements were pulled and whether it was disposed.</summary>
    public sealed class LazySequence<T>(IEnumerable<T> items) : IEnumerable<T>
    {
        private int _pulled;
        private int _disposals;

        public int Pulled => Volatile.Read(ref _pulled);

        public int Disposals => Volatile.Read(ref _disposals);

        public IEnumerator<T> GetEnumerator()
        {
            try
            {
                foreach (T item in items)
                {
                    Interlocked.Increment(ref _pulled);
                    yield return item;
                }
            }
            finally
            {
                Interlocked.Increment(ref _disposals);
            }
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>An async sequence that tracks how many of its kind are active (enumerating, not yet disposed).</summary>
    public static async IAsyncEnumerable<int> Tracked(ConcurrencyProbe probe, int id, IEnumerable<int> items, SourceMode mode, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        probe.Enter(id);
        try
        {
            foreach (int item in items)
            {
                if (mode == SourceMode.Yielding)
                {
                    await Task.Yield();
                }

                cancellationToken.ThrowIfCancellationRequested();
                yield return item;
            }
        }
        finally
        {
            probe.Exit();
        }
    }

    /// <summary>An async sequence that yields <paramref name="items"/> and then waits on <paramref name="gate"/> (or its token) forever-ish.</summary>
    public static async IAsyncEnumerable<int> ThenWait(IEnumerable<int> items, Task gate, Action? onStall = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        foreach (int item in items)
        {
            yield return item;
        }

        onStall?.Invoke();
        await gate.WaitAsync(cancellationToken);
    }
}
