namespace AsyncIterTools;

// AsCompleted over given tasks: how it waits for a task it does not own, and how it observes the failures of the tasks
// it stopped waiting for.
public static partial class AsyncIter
{
    /// <summary>How the tasks overload waits for a task it does not own.</summary>
    private static class GivenTask<T>
    {
        /// <summary>One task's completion, for the operator: a continuation that the calls' token (cancelled whenever the
        /// operator ends) removes from the task, as <c>Task.WhenAny</c> removes its own from the tasks that lost. An
        /// enumeration that ended leaves nothing attached to a task that outlives it (a host's stopping task, a cached
        /// one), however many enumerations wait for that task; the task's failure is still observed whenever it comes
        /// (<see cref="TaskFailures.Observe"/>).</summary>
        public static readonly Func<Task<T>, CancellationToken, ValueTask<T>> WaitFor = static (task, stop) =>
        {
            if (task.IsCompleted)
            {
                return new ValueTask<T>(task);
            }

            TaskFailures.Observe(task);
            return new ValueTask<T>(task.ContinueWith(
                static t => t.GetAwaiter().GetResult(), stop, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default));
        };
    }

    /// <summary>Observes the failures of tasks the operator stopped waiting for, so they never raise
    /// <see cref="TaskScheduler.UnobservedTaskException"/>: one continuation per task for as long as it lives (two when
    /// enumerations race to its first), not one per enumeration that waited for it. It captures no ExecutionContext: it
    /// would keep the first enumerating caller's <c>AsyncLocal</c> values alive as long as the task.</summary>
    private static class TaskFailures
    {
        private static readonly ConditionalWeakTable<Task, object> s_observers = new();

        private static readonly object s_observed = new();

        private static readonly ConditionalWeakTable<Task, object>.CreateValueCallback s_observe = static task =>
        {
            task.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(() => _ = task.Exception);
            return s_observed;
        };

        public static void Observe(Task task) => _ = s_observers.GetValue(task, s_observe);
    }

    /// <summary>Reads the given tasks, observing the failures of those that fail; a failure reading them is dropped (the
    /// caller has one of its own to throw).</summary>
    private static void ObserveGivenTasks<TArg>(IEnumerable<TArg> inputs)
    {
        try
        {
            using IEnumerator<TArg> e = inputs.GetEnumerator();
            ObserveRestOfGivenTasks(e);
        }
        catch (Exception)
        {
            // Dropped: the later of two failures.
        }
    }

    /// <summary>Reads the given tasks <paramref name="inputs"/> has left, observing the failures of those that fail (a
    /// <see langword="null"/> element stopped the operator's reading); a failure reading them is dropped (the operator
    /// has one of its own to throw).</summary>
    private static void ObserveRestOfGivenTasks<TArg>(IEnumerator<TArg> inputs)
    {
        try
        {
            while (inputs.MoveNext())
            {
                if (inputs.Current is Task task)
                {
                    TaskFailures.Observe(task);
                }
            }
        }
        catch (Exception)
        {
            // Dropped: the later of two failures.
        }
    }
}
