namespace AsyncPrimitives.Tests.Support;

/// <summary>
/// Runs a long loop of steps (a race loop, or several loops at once that count their steps together) on the pool and
/// waits for it, bounding each step rather than the whole loop: the wait fails only when no step has begun for
/// <see cref="StallBound"/>. How long thousands of hand-offs between
/// threads take depends on the machine's load (a loaded 2-core host needs well over a minute for some of these loops),
/// while a step that hangs leaves the count where it was.
/// </summary>
internal static class StepLoop
{
    /// <summary>How long one step may take before the loop counts as hung.</summary>
    public static readonly TimeSpan StallBound = TimeSpan.FromSeconds(30);

    /// <summary>Runs <paramref name="loop"/> on the pool, which calls the action it is given at the start of each step.</summary>
    public static Task RunAsync(Action<Action> loop) => WatchAsync(step => Task.Run(() => loop(step)));

    /// <inheritdoc cref="RunAsync(Action{Action})"/>
    public static Task RunAsync(Func<Action, Task> loop) => WatchAsync(step => Task.Run(() => loop(step)));

    private static async Task WatchAsync(Func<Action, Task> start)
    {
        int steps = 0;
        Task running = start(() => Interlocked.Increment(ref steps));
        int seen = -1;
        await running.WaitAsync(StallBound).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        while (!running.IsCompleted)
        {
            int now = Volatile.Read(ref steps);
            now.Should().NotBe(seen, "no step of the loop began for {0} (the loop hangs at step {1})", StallBound, now);
            seen = now;
            await running.WaitAsync(StallBound).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        await running;
    }
}
