using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Threading.Channels;

namespace AsyncIterTools.Internal;

/// <summary>
/// The engine behind GatherAsync, GatherSettledAsync and AsCompleted: starts work from a lazily enumerated
/// sequence of factories, at most <c>maxConcurrency</c> at a time, and reports each piece of work through a
/// completion queue in the order it finishes.
/// </summary>
/// <remarks>
/// Single consumer: <see cref="Fill"/>, <see cref="NextAsync"/>, <see cref="Fail"/>, <see cref="Stop"/> and
/// <see cref="DrainAsync"/> are called by one logical flow at a time (the gathering method or the iterator).
/// Only the completion continuations run concurrently, and they only write to the channel.
/// </remarks>
internal sealed class WorkRunner<T> : IDisposable
{
    /// <summary>The work factories; advanced only by <see cref="Fill"/>, disposed by <see cref="Dispose"/>.</summary>
    private readonly IEnumerator<Func<CancellationToken, Task<T>>> _work;

    /// <summary>Upper bound of <see cref="_running"/>.</summary>
    private readonly int _maxConcurrency;

    /// <summary>Linked to the caller's token; its token is given to every piece of work; cancelled by <see cref="Stop"/>.</summary>
    private readonly CancellationTokenSource _cts;

    /// <summary>Whether the runner started the work (and so must await it on exit) or was handed running tasks.</summary>
    private readonly bool _ownsWork;

    /// <summary>Every started piece of work's node is written here exactly once, when it completes.</summary>
    private readonly Channel<Pending> _completions =
        Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = false });

    /// <summary>
    /// Nodes whose completion was read back by <see cref="NextAsync"/>, ready for the next piece of work. Touched only by
    /// the single consumer (<see cref="Fill"/> and <see cref="NextAsync"/>), so it needs no lock; it never holds more
    /// nodes than the most pieces ever running at once.
    /// </summary>
    private readonly Stack<Pending> _free = new();

    /// <summary>Started and not yet read back from <see cref="_completions"/>.</summary>
    private int _running;

    /// <summary>How many pieces of work were started; the next one gets this index.</summary>
    private int _started;

    /// <summary>True once the factories are exhausted or <see cref="Stop"/> was called: nothing new starts.</summary>
    private bool _stopped;

    /// <summary>The first failure reported through <see cref="Fail"/>.</summary>
    private ExceptionDispatchInfo? _failure;

    public WorkRunner(IEnumerable<Func<CancellationToken, Task<T>>> work, int maxConcurrency, bool ownsWork, CancellationToken cancellationToken)
    {
        _maxConcurrency = maxConcurrency;
        _ownsWork = ownsWork;
        _cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _work = work.GetEnumerator();
    }

    /// <summary>Gets how many pieces of work are running (started and not yet returned by <see cref="NextAsync"/>).</summary>
    public int Running => _running;

    /// <summary>Gets the first failure reported through <see cref="Fail"/>, if any.</summary>
    public ExceptionDispatchInfo? Failure => _failure;

    /// <summary>Starts work, in input order, until <c>maxConcurrency</c> pieces run or nothing is left to start.</summary>
    public void Fill()
    {
        while (!_stopped && _running < _maxConcurrency)
        {
            if (_cts.IsCancellationRequested)
            {
                _stopped = true;
                return;
            }

            Func<CancellationToken, Task<T>> factory;
            try
            {
                if (!_work.MoveNext())
                {
                    _stopped = true;
                    return;
                }

                factory = _work.Current ?? throw new InvalidOperationException("The sequence of work contains a null element.");
            }
            catch (Exception ex)
            {
                Fail(ex);
                return;
            }

            Task<T> task;
            try
            {
                task = factory(_cts.Token) ?? throw new InvalidOperationException("A work factory returned a null task.");
            }
            catch (Exception ex)
            {
                // A factory that throws synchronously is a piece of work that failed.
                task = Task.FromException<T>(ex);
            }

            Pending node = _free.Count > 0 ? _free.Pop() : new Pending(_completions.Writer);
            _running++;
            node.Start(_started++, task);
        }
    }

    /// <summary>Waits for the next piece of work to complete (in completion order).</summary>
    /// <remarks>Synchronous when a completion is already queued (the common case under load): no async method runs.</remarks>
    public ValueTask<Completion> NextAsync(CancellationToken cancellationToken)
    {
        Debug.Assert(_running > 0, "Nothing is running.");
        return _completions.Reader.TryRead(out Pending? node) ? new ValueTask<Completion>(Take(node)) : NextSlowAsync(cancellationToken);
    }

    private async ValueTask<Completion> NextSlowAsync(CancellationToken cancellationToken)
    {
        // A cancelled read takes nothing out of the channel, so no completion is ever lost.
        return Take(await _completions.Reader.ReadAsync(cancellationToken));
    }

    private Completion Take(Pending node)
    {
        _running--;

        // The node's continuation has finished with it (it was written to the channel last), so it can be reused.
        Completion completion = node.Take();
        _free.Push(node);
        return completion;
    }

    /// <summary>Records <paramref name="exception"/> if it is the first failure, then stops.</summary>
    public void Fail(Exception exception)
    {
        _failure ??= ExceptionDispatchInfo.Capture(exception);
        Stop();
    }

    /// <summary>Starts nothing new and cancels the running work.</summary>
    public void Stop()
    {
        _stopped = true;
        try
        {
            _cts.Cancel();
        }
        catch (AggregateException)
        {
            // A callback registered by user work threw; the work itself reports its own outcome.
        }
    }

    /// <summary>Awaits every piece of work still running (after <see cref="Stop"/> they observe cancellation).</summary>
    /// <remarks>Running tasks the runner did not start (the task overload of AsCompleted) are not awaited.</remarks>
    public async ValueTask DrainAsync()
    {
        if (!_ownsWork)
        {
            return;
        }

        while (_running > 0)
        {
            // Exceptions were already observed by Completion.Post; the result is dropped.
            _ = await NextAsync(CancellationToken.None);
        }
    }

    public void Dispose()
    {
        _work.Dispose();
        _cts.Dispose();
    }

    /// <summary>One completed piece of work: its input index and task.</summary>
    internal readonly struct Completion(int index, Task<T> task)
    {
        public int Index { get; } = index;

        public Task<T> Task { get; } = task;

        /// <summary>Gets the value, or throws the failure itself (never an AggregateException).</summary>
        public T GetResult() => Task.GetAwaiter().GetResult();
    }

    /// <summary>
    /// The bookkeeping of one running piece of work, reused for later pieces once its completion has been read: its
    /// continuation delegate is created once per node, so starting and completing work allocates nothing here.
    /// </summary>
    private sealed class Pending
    {
        private readonly ChannelWriter<Pending> _writer;

        /// <summary>Cached <see cref="Post"/>; registered directly as the task's continuation (no ContinueWith task).</summary>
        private readonly Action _post;

        private int _index;

        private Task<T>? _task;

        public Pending(ChannelWriter<Pending> writer)
        {
            _writer = writer;
            _post = Post;
        }

        public void Start(int index, Task<T> task)
        {
            _index = index;
            _task = task;
            if (task.IsCompleted)
            {
                Post();
            }
            else
            {
                // Runs Post on the thread that completes the task (it only writes to the channel, never user code).
                task.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_post);
            }
        }

        /// <summary>Hands the outcome to the consumer and clears the node for reuse.</summary>
        public Completion Take()
        {
            var completion = new Completion(_index, _task!);
            _task = null;
            return completion;
        }

        private void Post()
        {
            // Observe the failure here, so that work abandoned on early exit never raises UnobservedTaskException;
            // whoever reads this completion still gets the exception from GetResult.
            if (_task!.IsFaulted)
            {
                _ = _task.Exception;
            }

            // Last touch of the node: once written, the consumer may read and reuse it.
            bool written = _writer.TryWrite(this);
            Debug.Assert(written, "The completion channel is unbounded and never completed.");
        }
    }
}
