using System.Diagnostics;

namespace AsyncIterTools.Internal;

/// <summary>
/// The state shared by the copies of a Tee: a singly linked list of the items read from the source, from which each
/// copy reads at its own pace. A copy holds a reference to the last node it consumed, so nodes every copy has passed
/// become garbage on their own. Whichever copy needs an item nobody has read yet starts a pull; every copy that needs
/// it (the puller included) waits for the pull to publish it, so one copy's cancellation never disturbs another.
/// </summary>
/// <remarks>
/// All mutable state is guarded by <see cref="_lock"/>; no user code (source or continuation) runs while it is held.
/// Waiters park on <see cref="_changed"/>, a promise completed (asynchronously) on every change they may wait for:
/// an item published, the source ended or failed, a copy advanced while the buffer is bounded, a copy detached.
/// </remarks>
internal sealed class TeeBuffer<T>
{
    private readonly object _lock = new();

    private readonly IAsyncEnumerable<T> _source;

    /// <summary>The most items read and not yet consumed by every attached copy; null for unbounded.</summary>
    private readonly int? _maxBuffer;

    /// <summary>The source's token: cancelled only when the last copy detaches while a pull is in flight.</summary>
    private readonly CancellationTokenSource _cts = new();

    /// <summary>Per copy: how many items it has consumed; <see cref="long.MaxValue"/> once it detached.</summary>
    private readonly long[] _positions;

    /// <summary>The last node published; the start sentinel before the first item.</summary>
    private Node _tail = new(default!);

    /// <summary>How many items have been published.</summary>
    private long _published;

    /// <summary>Created by the first pull; used by one pull at a time; disposed once by the last copy to detach.</summary>
    private IAsyncEnumerator<T>? _enumerator;

    /// <summary>True while a pull is in flight: nobody else may call the source.</summary>
    private bool _pulling;

    /// <summary>True once the source ended; published items remain readable.</summary>
    private bool _ended;

    /// <summary>The source's failure, seen by every copy at the position after the last published item.</summary>
    private ExceptionDispatchInfo? _failure;

    /// <summary>Copies not yet disposed.</summary>
    private int _attached;

    /// <summary>Completed (and replaced on demand) at each change; null when nobody waits.</summary>
    private TaskCompletionSource<bool>? _changed;

    public TeeBuffer(IAsyncEnumerable<T> source, int count, int? maxBuffer)
    {
        _source = source;
        _maxBuffer = maxBuffer;
        _positions = new long[count];
        _attached = count;
        Start = _tail;
    }

    /// <summary>
    /// Gets the sentinel every copy starts from. Read once per copy at construction; the buffer itself never reads it
    /// again, so only copies hold the list's head and nodes every copy has passed are collected.
    /// </summary>
    public Node Start { get; private set; }

    /// <summary>Drops the buffer's reference to the start sentinel once every copy has taken it.</summary>
    public void ReleaseStart() => Start = null!;

    /// <summary>
    /// Advances copy <paramref name="index"/> past <paramref name="node"/>: returns the next node, or null at the end;
    /// throws the source's failure when the copy reaches it.
    /// </summary>
    public async ValueTask<Node?> NextAsync(int index, Node node, CancellationToken cancellationToken)
    {
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            TaskCompletionSource<bool>? wake = null;
            TaskCompletionSource<bool>? wait = null;
            ExceptionDispatchInfo? failure = null;
            bool ended = false;
            bool pull = false;
            Node? next;
            lock (_lock)
            {
                next = node.Next;
                if (next is not null)
                {
                    _positions[index]++;
                    if (_maxBuffer is not null)
                    {
                        // This copy may have been the slowest: a copy waiting for room may go on.
                        wake = TakeWaiters();
                    }
                }
                else if (_failure is not null)
                {
                    failure = _failure;
                }
                else if (_ended)
                {
                    ended = true;
                }
                else if (!_pulling && HasRoom())
                {
                    _pulling = true;
                    pull = true;
                }
                else
                {
                    wait = _changed ??= new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
                }
            }

            if (next is not null)
            {
                wake?.TrySetResult(true);
                return next;
            }

            failure?.Throw();
            if (ended)
            {
                return null;
            }

            if (pull)
            {
                // Not awaited: the pull publishes for every copy, and this copy then waits like the others, so its own
                // cancellation ends only its own wait. The pull never faults; DetachAsync waits for it at the end.
                _ = PullAsync();
                continue;
            }

            await wait!.Task.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Detaches copy <paramref name="index"/>; the last copy to detach disposes the source.</summary>
    public async ValueTask DetachAsync(int index)
    {
        TaskCompletionSource<bool>? wake;
        bool last;
        lock (_lock)
        {
            _positions[index] = long.MaxValue;
            last = --_attached == 0;
            wake = TakeWaiters();
        }

        wake?.TrySetResult(true);
        if (!last)
        {
            return;
        }

        // No copy is left to start a pull; wait out one in flight (cancelled), then dispose the source once.
        while (true)
        {
            TaskCompletionSource<bool> wait;
            lock (_lock)
            {
                if (!_pulling)
                {
                    break;
                }

                wait = _changed ??= new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            }

            _cts.CancelQuietly();
            await wait.Task;
        }

        try
        {
            if (_enumerator is not null)
            {
                await _enumerator.DisposeAsync();
            }
        }
        finally
        {
            _cts.Dispose();
        }
    }

    /// <summary>Reads one item from the source and publishes it (or the end, or the failure).</summary>
    private async Task PullAsync()
    {
        bool hasItem = false;
        T item = default!;
        ExceptionDispatchInfo? failure = null;
        try
        {
            _enumerator ??= _source.GetAsyncEnumerator(_cts.Token);
            // Not ConfigureAwait(false): Current is user code, read where the copy that started the pull runs (its
            // context, if any: one post per item the source completes off it), as the other operators read it.
            if (await _enumerator.MoveNextAsync())
            {
                item = _enumerator.Current; // before hasItem: a Current that throws is the source's failure
                hasItem = true;
            }
        }
        catch (Exception ex)
        {
            failure = ExceptionDispatchInfo.Capture(ex);
        }

        TaskCompletionSource<bool>? wake;
        lock (_lock)
        {
            Debug.Assert(_pulling, "Only the puller publishes.");
            if (hasItem)
            {
                var node = new Node(item);
                _tail.Next = node;
                _tail = node;
                _published++;
            }
            else if (failure is not null)
            {
                _failure = failure;
            }
            else
            {
                _ended = true;
            }

            _pulling = false;
            wake = TakeWaiters();
        }

        wake?.TrySetResult(true);
    }

    /// <summary>Whether one more item may be read without exceeding the bound. Lock held.</summary>
    private bool HasRoom()
    {
        if (_maxBuffer is not { } max)
        {
            return true;
        }

        long slowest = long.MaxValue;
        foreach (long position in _positions)
        {
            slowest = Math.Min(slowest, position);
        }

        return slowest == long.MaxValue || _published - slowest < max;
    }

    /// <summary>Takes the current waiters' promise, to be completed outside the lock. Lock held.</summary>
    private TaskCompletionSource<bool>? TakeWaiters()
    {
        TaskCompletionSource<bool>? changed = _changed;
        _changed = null;
        return changed;
    }

    /// <summary>One published item; <see cref="Next"/> is set once, under the lock, when the next item is published.</summary>
    internal sealed class Node
    {
        public Node(T value)
        {
            Value = value;
        }

        public T Value { get; }

        public Node? Next { get; set; }
    }
}
