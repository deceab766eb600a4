namespace AsyncIterTools.Internal;

/// <summary>Work given as factories (GatherAsync, GatherSettledAsync, AsCompleted): how one piece is started.</summary>
internal static class WorkFactory
{
    /// <summary>Starts one piece of work with the operator's token; a factory that returns a null task fails that piece.</summary>
    public static ValueTask<T> Start<T>(Func<CancellationToken, Task<T>> factory, CancellationToken cancellationToken) =>
        new(factory(cancellationToken) ?? throw new InvalidOperationException("A work factory returned a null task."));
}
