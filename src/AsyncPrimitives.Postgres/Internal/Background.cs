namespace AsyncPrimitives.Postgres.Internal;

/// <summary>
/// Starts the coordinator's own work (its session and the loops it runs, the notifier's drain, the commit watcher) on
/// the thread pool without the <see cref="ExecutionContext"/> of the call that happened to start it. That work outlives
/// the call and serves every caller: with the caller's context it would carry the caller's <c>AsyncLocal</c> values for
/// its whole life (its <c>Activity</c>, so the heartbeat's queries would be traced as part of that request; its ambient
/// <c>TransactionScope</c>; logging scopes), and keep them alive.
/// </summary>
internal static class Background
{
    public static Task Run(Func<Task> work) => WithoutFlow(() => Task.Run(work));

    public static Task<T> Run<T>(Func<Task<T>> work) => WithoutFlow(() => Task.Run(work));

    private static TTask WithoutFlow<TTask>(Func<TTask> start)
    {
        if (ExecutionContext.IsFlowSuppressed())
        {
            return start();
        }

        using (ExecutionContext.SuppressFlow())
        {
            return start();
        }
    }
}
