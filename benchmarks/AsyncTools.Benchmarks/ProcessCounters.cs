using System.Diagnostics;

namespace AsyncTools.Benchmarks;

/// <summary>What a measured stretch of a report cost the whole process: operations, time, bytes allocated and thread-pool
/// work items completed (the two that do not swing with the load, beside the time that does).</summary>
internal readonly record struct Totals(long Ops, TimeSpan Elapsed, long Bytes, long WorkItems)
{
    public double Rate => Ops / Elapsed.TotalSeconds;

    public double NanosecondsPerOp => Elapsed.TotalNanoseconds / Ops;

    public double BytesPerOp => Ops == 0 ? 0 : (double)Bytes / Ops;

    public double WorkItemsPerOp => Ops == 0 ? 0 : (double)WorkItems / Ops;

    public static Totals operator +(Totals a, Totals b) =>
        new(a.Ops + b.Ops, a.Elapsed + b.Elapsed, a.Bytes + b.Bytes, a.WorkItems + b.WorkItems);
}

/// <summary>The process's counters at one moment: <see cref="Take"/> before a stretch, <see cref="Until"/> after it.</summary>
internal readonly record struct Snapshot(long Timestamp, long Bytes, long WorkItems)
{
    public static Snapshot Take() =>
        new(Stopwatch.GetTimestamp(), GC.GetTotalAllocatedBytes(precise: true), ThreadPool.CompletedWorkItemCount);

    public Totals Until(long ops) => new(
        ops,
        Stopwatch.GetElapsedTime(Timestamp),
        GC.GetTotalAllocatedBytes(precise: true) - Bytes,
        ThreadPool.CompletedWorkItemCount - WorkItems);
}
