namespace AsyncPrimitives.Tests.Support;

/// <summary>Bounded waits for tests whose subject may end in failure (a timeout or cancellation under test).</summary>
internal static class Settle
{
    /// <summary>How long a wait that a bug could hang is given.</summary>
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    /// <summary>Waits (bounded) for <paramref name="task"/> to finish in any way, and asserts that it did.</summary>
    public static async Task FinishesAsync(Task task)
    {
        await task.WaitAsync(Bound).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        task.IsCompleted.Should().BeTrue("the wait should have finished");
    }

    /// <summary>Waits (bounded) for <paramref name="task"/> to finish, then asserts it failed with <typeparamref name="TException"/>.
    /// The bound is checked separately so a hang cannot pass for the TimeoutException under test.</summary>
    public static async Task<TException> ThrowsSoon<TException>(Task task)
        where TException : Exception
    {
        await FinishesAsync(task);
        return (await FluentActions.Awaiting(() => task).Should().ThrowAsync<TException>()).Which;
    }
}
