namespace AsyncTools.Testing;

/// <summary>What reaches <see cref="TaskScheduler.UnobservedTaskException"/> once a test's tasks are collected.</summary>
internal static class UnobservedFailures
{
    /// <summary>Runs <paramref name="run"/> (which must not keep its tasks reachable), collects garbage, and returns the
    /// <typeparamref name="TException"/>s that reached <see cref="TaskScheduler.UnobservedTaskException"/> (a type of the
    /// test's own, so other tests' failures collected meanwhile are not counted).</summary>
    public static async Task<List<Exception>> AfterAsync<TException>(Func<Task> run)
        where TException : Exception
    {
        var unobserved = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        EventHandler<UnobservedTaskExceptionEventArgs> handler = (_, e) =>
        {
            foreach (Exception ex in e.Exception.InnerExceptions.OfType<TException>())
            {
                unobserved.Enqueue(ex);
            }
        };

        TaskScheduler.UnobservedTaskException += handler;
        try
        {
            await run();
            await Task.Yield(); // collect on a fresh stack
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            return [.. unobserved];
        }
        finally
        {
            TaskScheduler.UnobservedTaskException -= handler;
        }
    }
}
