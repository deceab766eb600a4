using System.Globalization;
using System.Reflection;
using BenchmarkDotNet.Attributes;

namespace AsyncTools.Benchmarks;

/// <summary>
/// Interleaved report (<c>--interleaved</c>): the rows of the classes whose time BenchmarkDotNet gives no stable verdict
/// for on a small machine (8 tasks contending through the thread pool, producers and consumers streaming through a
/// queue, or 64 calls in flight that each yield the thread: each row runs in a process of its own, and how that process's pool interleaves the tasks moves a row by up
/// to 3 times between runs). Here every row runs in one
/// process, in rounds, once per round in a random order, so the pool's state and the machine's load hit every row alike.
/// Per row: the median time per operation, the median and quartiles of its per-round ratio to the class's baseline, and
/// bytes, thread-pool work items and the process's CPU time per operation over all rounds (CPU time above the time per
/// operation: more than one core was busy, the pool's idle threads spinning for work included); where a class's rows
/// count their waits (<see cref="WaitCounter"/>), the acquires per operation that had to wait. Each class's heading gives
/// the pool's thread count after its rounds: how far the pool had grown past the machine's cores while the class ran.
/// </summary>
public static class InterleavedReport
{
    /// <summary>
    /// The classes reported, each with its <c>[Benchmark]</c> methods as rows (one a baseline), and how many times a
    /// round each row runs: enough for tens of milliseconds a measurement (a streaming row moves a million items a run).
    /// </summary>
    public static readonly (Type Type, int InvokesPerRound)[] Classes =
    [
        (typeof(ContendedLockBenchmarks), 10),
        (typeof(ContendedReaderWriterLockBenchmarks), 10),
        (typeof(QueueSpscBenchmarks), 1),
        (typeof(QueueSpscTryBenchmarks), 1),
        (typeof(QueueMpmcBenchmarks), 1),
        (typeof(GatherMapBenchmarks), 5),
        (typeof(AsyncSourceMapBenchmarks), 5),
    ];

    private sealed record Row(string Name, Func<Task> Run, bool Baseline, int OperationsPerInvoke)
    {
        public List<double> Nanoseconds { get; } = [];

        public List<double> Ratios { get; } = [];

        public Totals Totals { get; set; }
    }

    /// <summary>Runs <paramref name="rounds"/> rounds of every class's rows, each row its class's number of times a round
    /// (once when <paramref name="once"/>, for a smoke run), and writes one table per class; only the classes whose name
    /// contains <paramref name="only"/> when it is given (a class then runs in a pool no earlier class has grown).</summary>
    public static async Task ReportAsync(TextWriter output, int rounds, bool once, string? only = null)
    {
        output.WriteLine($"## Interleaved: {rounds} rounds, every row run the same number of times a round, in a random order");
        output.WriteLine();
        var random = new Random(12345);
        foreach ((Type type, int classInvokes) in Classes.Where(c => only is null || c.Type.Name.Contains(only, StringComparison.Ordinal)))
        {
            int invokesPerRound = once ? 1 : classInvokes;
            List<Row> rows = RowsOf(type);
            Row baseline = rows.Single(r => r.Baseline);
            foreach (Row row in rows)
            {
                await row.Run(); // warm up: JIT, tiering, the pool's threads
            }

            for (int round = 0; round < rounds; round++)
            {
                foreach (Row row in rows.OrderBy(_ => random.Next()))
                {
                    await MeasureAsync(row, invokesPerRound);
                }

                foreach (Row row in rows)
                {
                    row.Ratios.Add(row.Nanoseconds[^1] / baseline.Nanoseconds[^1]);
                }
            }

            bool countsWaits = rows.Any(r => r.Totals.Waits > 0);
            output.WriteLine($"### {type.Name} ({invokesPerRound} runs a row a round; {ThreadPool.ThreadCount} pool threads at the end)");
            output.WriteLine();
            output.WriteLine("| Row | Median time/op | Ratio: median (quartiles) | Allocated/op | Work items/op | CPU time/op |" + (countsWaits ? " Waits/op |" : string.Empty));
            output.WriteLine("|---|---:|---:|---:|---:|---:|" + (countsWaits ? "---:|" : string.Empty));
            foreach (Row row in rows)
            {
                output.WriteLine(string.Format(
                    CultureInfo.InvariantCulture,
                    "| `{0}`{1} | {2:0.0} ns | {3:0.00} ({4:0.00}–{5:0.00}) | {6:0} B | {7:0.00} | {8:0} ns |{9}",
                    row.Name,
                    row.Baseline ? " (baseline)" : string.Empty,
                    Quantile(row.Nanoseconds, 0.5),
                    Quantile(row.Ratios, 0.5),
                    Quantile(row.Ratios, 0.25),
                    Quantile(row.Ratios, 0.75),
                    row.Totals.BytesPerOp,
                    row.Totals.WorkItemsPerOp,
                    row.Totals.CpuNanosecondsPerOp,
                    countsWaits ? string.Format(CultureInfo.InvariantCulture, " {0:0.000} |", row.Totals.WaitsPerOp) : string.Empty));
            }

            output.WriteLine();
        }
    }

    private static List<Row> RowsOf(Type type)
    {
        object instance = Activator.CreateInstance(type)!;
        return type.GetMethods(BindingFlags.Public | BindingFlags.Instance)
            .Select(m => (Method: m, Attribute: m.GetCustomAttribute<BenchmarkAttribute>()))
            .Where(m => m.Attribute is not null)
            .OrderBy(m => m.Attribute!.Baseline ? 0 : 1)
            .ThenBy(m => m.Method.MetadataToken)
            .Select(m => new Row(m.Method.Name, Runner(m.Method, instance), m.Attribute!.Baseline, m.Attribute.OperationsPerInvoke))
            .ToList();
    }

    /// <summary>A row's run as a delegate: a benchmark returns a <see cref="Task"/>, or a <see cref="Task{TResult}"/> of a
    /// sum or a count.</summary>
    private static Func<Task> Runner(MethodInfo method, object instance) =>
        method.ReturnType == typeof(Task) ? method.CreateDelegate<Func<Task>>(instance)
        : method.ReturnType == typeof(Task<long>) ? method.CreateDelegate<Func<Task<long>>>(instance)
        : method.ReturnType == typeof(Task<int>) ? method.CreateDelegate<Func<Task<int>>>(instance)
        : throw new NotSupportedException($"{method.Name}: an interleaved row returns Task, Task<long> or Task<int>, not {method.ReturnType}.");

    private static async Task MeasureAsync(Row row, int invokes)
    {
        Snapshot start = Snapshot.Take();
        for (int i = 0; i < invokes; i++)
        {
            await row.Run();
        }

        Totals totals = start.Until((long)invokes * row.OperationsPerInvoke);
        row.Nanoseconds.Add(totals.NanosecondsPerOp);
        row.Totals += totals;
    }

    private static double Quantile(List<double> values, double q)
    {
        List<double> sorted = values.Order().ToList();
        return sorted[(int)Math.Round(q * (sorted.Count - 1))];
    }
}
