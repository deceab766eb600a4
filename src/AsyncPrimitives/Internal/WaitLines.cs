namespace AsyncPrimitives.Internal;

/// <summary>
/// The white-box view of a primitive's lines of waiters, for tests (through InternalsVisibleTo) and diagnostics:
/// how many wait, how many nodes are kept for reuse, and the waiting nodes themselves (for leak checks). Every
/// primitive exposes one as <c>internal WaitLines Lines</c>.
/// </summary>
internal readonly struct WaitLines(params IWaitLine[] lines)
{
    /// <summary>The most recycled nodes one line keeps for reuse; beyond this a burst of waiters is left to the GC.</summary>
    public const int PoolCapacity = 32;

    /// <summary>Waiters in all of the primitive's lines (a snapshot).</summary>
    public int Waiting => lines.Sum(line => line.Snapshot().Linked.Count);

    /// <summary>The most nodes any one line keeps for reuse (a snapshot); at most <see cref="PoolCapacity"/>.</summary>
    public int MaxPooled => lines.Max(line => line.Snapshot().Pooled);

    /// <summary>Every node waiting in the primitive's lines right now, oldest first per line.</summary>
    public IReadOnlyList<object> LinkedNodes() => lines.SelectMany(line => line.Snapshot().Linked).ToList();
}

/// <summary>One line of waiters, seen from outside (<see cref="WaitLines"/>).</summary>
internal interface IWaitLine
{
    /// <summary>The line's state, read under its lock.</summary>
    WaitLineSnapshot Snapshot();
}

/// <summary>A line's waiting nodes and the number of nodes it keeps for reuse.</summary>
internal readonly record struct WaitLineSnapshot(IReadOnlyList<object> Linked, int Pooled);
