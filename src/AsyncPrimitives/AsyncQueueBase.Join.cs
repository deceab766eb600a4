using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <content>Task accounting (Python's <c>task_done</c> and <c>join</c>).</content>
public abstract partial class AsyncQueueBase<T>
{
    /// <summary>
    /// Marks one item that entered the queue as processed (Python's <c>task_done</c>). When every item is done,
    /// <see cref="JoinAsync(CancellationToken)"/> completes.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called more times than items entered the queue.</exception>
    public void TaskDone()
    {
        var completions = default(Completions<T>);
        lock (_sync)
        {
            if (_unfinished == 0)
            {
                throw new InvalidOperationException("TaskDone() was called more times than items entered the queue.");
            }

            if (--_unfinished == 0)
            {
                _joiners.ServeAll(default!, ref completions);
            }
        }

        completions.CompleteAll();
    }

    /// <summary>Waits until every item that entered the queue has been marked done with <see cref="TaskDone"/>.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when <see cref="UnfinishedTasks"/> reaches zero; already completed if it is zero.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first.</exception>
    public ValueTask JoinAsync(CancellationToken cancellationToken = default) =>
        _joiners.WaitWithoutResultAsync(new JoinPolicy(this), default!, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Waits at most <paramref name="timeout"/> until every item that entered the queue has been marked done.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit,
    /// <see cref="TimeSpan.Zero"/> to check now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when <see cref="UnfinishedTasks"/> reaches zero; already completed if it is zero.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or
    /// longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">Tasks were still unfinished after <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first.</exception>
    public ValueTask JoinAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return _joiners.WaitWithoutResultAsync(new JoinPolicy(this), default!, timeout, cancellationToken);
    }

    /// <summary>The engine's view of a join: served once every item is done.</summary>
    private readonly struct JoinPolicy(AsyncQueueBase<T> queue) : IWaitPolicy<T>
    {
        public bool HasLockFreePath => false;

        public bool TryAcquire(T offer, bool willWait, ref Completions<T> completions, out T result)
        {
            result = default!;
            return queue._unfinished == 0;
        }

        public Exception? Refusal() => null;

        public void OnWaiterLeft(ref Completions<T> completions)
        {
        }
    }
}
