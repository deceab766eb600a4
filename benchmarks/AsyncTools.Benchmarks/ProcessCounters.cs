using System.Diagnostics;

namespace AsyncTools.Benchmarks;

/// <summary>What a measured stretch of a report cost the whole process: operations, time, bytes allocated and thread-pool
/// work items completed (the two that do not swing with the load, beside the time that does), the acquires that had to
/// wait where the rows count them (<see cref="WaitCounter"/>), and CPU time on every thread.</summary>
internal readonly record struct Totals(long Ops, TimeSpan Elapsed, long Bytes, long WorkItems, long Waits, TimeSpan Cpu)
{
    public double Rate => Ops / Elapsed.TotalSeconds;

    public double NanosecondsPerOp => Elapsed.TotalNanoseconds / Ops;

    public double BytesPerOp => Ops == 0 ? 0 : (double)Bytes / Ops;

    public double WorkItemsPerOp => Ops == 0 ? 0 : (double)WorkItems / Ops;

    public double WaitsPerOp => Ops == 0 ? 0 : (double)Waits / Ops;

    /// <summary>Gets the process's CPU time (every thread, user and kernel) per operation: above the time per operation
    /// where more than one core was busy, spinning included.</summary>
    public double CpuNanosecondsPerOp => Ops == 0 ? 0 : Cpu.TotalNanoseconds / Ops;

    public static Totals operator +(Totals a, Totals b) =>
        new(a.Ops + b.Ops, a.Elapsed + b.Elapsed, a.Bytes + b.Bytes, a.WorkItems + b.WorkItems, a.Waits + b.Waits, a.Cpu + b.Cpu);
}

/// <summary>
/// The acquires of one task that could not complete at once (the awaiter was not completed when awaited), for the rows
/// that count them: each acquire is noted, and the task's count goes into a process-wide <see cref="Total"/> when it
/// ends. Every such wait is resumed through the thread pool, so it costs a work item.
/// </summary>
internal sealed class WaitCounter
{
    private static long s_total;

    private int _waits;

    /// <summary>Gets the acquires that had to wait, over every task that has ended.</summary>
    public static long Total => Interlocked.Read(ref s_total);

    public void Note(bool completedAtOnce) => _waits += completedAtOnce ? 0 : 1;

    public void AddToTotal() => Interlocked.Add(ref s_total, _waits);
}

/// <summary>The process's counters at one moment: <see cref="Take"/> before a stretch, <see cref="Until"/> after it. The
/// clock is read last in <see cref="Take"/> and first in <see cref="Until"/>: the precise allocation count suspends every
/// managed thread, which is not the stretch's time.</summary>
internal readonly record struct Snapshot(long Timestamp, long Bytes, long WorkItems, long Waits, TimeSpan Cpu)
{
    public static Snapshot Take()
    {
        long bytes = GC.GetTotalAllocatedBytes(precise: true);
        long workItems = ThreadPool.CompletedWorkItemCount;
        long waits = WaitCounter.Total;
        TimeSpan cpu = Environment.CpuUsage.TotalTime;
        return new(Stopwatch.GetTimestamp(), bytes, workItems, waits, cpu);
    }

    public Totals Until(long ops) => new(
        ops,
        Stopwatch.GetElapsedTime(Timestamp),
        GC.GetTotalAllocatedBytes(precise: true) - Bytes,
        ThreadPool.CompletedWorkItemCount - WorkItems,
        WaitCounter.Total - Waits,
        Environment.CpuUsage.TotalTime - Cpu);
}
