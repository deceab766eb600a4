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

    /// <summary>Every started piece of work is written here exactly once, when it completes.</summary>
    private readonly Channel<Completion> _completions =
        Channel.CreateUnbounded<Completion>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = false });

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

            var completion = new Completion(_started++, task, _completions.Writer);
            _running++;
            _ = task.ContinueWith(
                static (t, s) => ((Completion)s!).Post(),
                completion,
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
        }
    }

    /// <summary>Waits for the next piece of work to complete (in completion order).</summary>
    public async ValueTask<Completion> NextAsync(CancellationToken cancellationToken)
    {
        Debug.Assert(_running > 0, "Nothing is running.");
        if (!_completions.Reader.TryRead(out Completion? completion))
        {
            // A cancelled read takes nothing out of the channel, so no completion is ever lost.
            completion = await _completions.Reader.ReadAsync(cancellationToken);
        }

        _running--;
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

    /// <summary>One started piece of work: its input index and task.</summary>
    internal sealed class Completion(int index, Task<T> task, ChannelWriter<Completion> writer)
    {
        public int Index { get; } = index;

        public Task<T> Task { get; } = task;

        /// <summary>Gets the value, or throws the failure itself (never an AggregateException).</summary>
        public T GetResult() => Task.GetAwaiter().GetResult();

        public void Post()
        {
            // Observe the failure here, so that work abandoned on early exit never raises UnobservedTaskException;
            // whoever reads this completion still gets the exception from GetResult.
            if (Task.IsFaulted)
            {
                _ = Task.Exception;
            }

            bool written = writer.TryWrite(this);
            Debug.Assert(written, "The completion channel is unbounded and never completed.");
        }
    }
}
