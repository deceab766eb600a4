using AsyncTools.Benchmarks;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// Every benchmark class compares against a BCL or peer baseline in the same run (Baseline = true).
//   dotnet run -c Release --project benchmarks/AsyncTools.Benchmarks -- --filter '*'
// CI compiles and smoke-runs everything in-process with one iteration each (and the two reports below, small):
//   dotnet run -c Release --project benchmarks/AsyncTools.Benchmarks -- --filter '*' --smoke
// Reports that BenchmarkDotNet's per-operation numbers cannot show (no --filter needed):
//   --fairness   each Merge source's share of the first half of the output
//   --memory     GatherAsync(64) vs WhenAll over 1,000,000 items: bytes allocated, peak heap, max live work tasks
//   --interleaved  the contended lock, streaming queue and bounded gather/map classes, every row in one process in rounds (a
//                stable verdict where one process per row gives none); --only NAME: just the classes whose name contains NAME
//   postgres     AsyncPrimitives.Postgres vs DistributedLock.Postgres and a naive queue, on a throwaway PostgreSQL server
//                (ASYNCTOOLS_POSTGRES names another; skipped with a message where there is none)
//   postgres --sustained  its batched queue row without a break for 150 s, the rate per 10 s and the table's dead rows
bool smoke = args.Contains("--smoke");
bool fairness = args.Contains("--fairness");
bool memory = args.Contains("--memory");
bool interleaved = args.Contains("--interleaved");
bool postgres = args.Contains("postgres");
bool sustained = args.Contains("--sustained");
int onlyAt = Array.IndexOf(args, "--only");
string? only = onlyAt >= 0 && onlyAt + 1 < args.Length ? args[onlyAt + 1] : null;
args = args.Where((_, i) => onlyAt < 0 || (i != onlyAt && i != onlyAt + 1))
    .Where(a => a is not ("--smoke" or "--fairness" or "--memory" or "--interleaved" or "postgres" or "--sustained")).ToArray();

if (sustained || smoke)
{
    int status = await PostgresReport.RunAsync(Console.Out, smoke && !sustained, sustained: true);
    if (status != 0 || (sustained && args.Length == 0))
    {
        return status;
    }
}

if ((postgres && !sustained) || smoke)
{
    int status = await PostgresReport.RunAsync(Console.Out, smoke && !postgres);
    if (status != 0 || (postgres && args.Length == 0))
    {
        return status;
    }
}

if (fairness || smoke)
{
    await MergeFairness.ReportAsync(Console.Out, smoke && !fairness ? 1_000 : 10_000);
}

if (memory || smoke)
{
    await GatherMemoryReport.ReportAsync(Console.Out, smoke && !memory ? [10_000] : [10_000, 100_000, 1_000_000]);
}

if (interleaved || smoke)
{
    await InterleavedReport.ReportAsync(Console.Out, rounds: smoke && !interleaved ? 2 : 40, once: smoke && !interleaved, only);
}

if ((fairness || memory || interleaved) && !smoke && args.Length == 0)
{
    return 0;
}

// No JoinSummary for real runs: a joined table computes every Ratio against one class's baseline. Each class (and each
// category inside OperatorBenchmarks and MergeBenchmarks) gets its own table, with ratios to its own baseline.
IConfig config = DefaultConfig.Instance
    .AddDiagnoser(MemoryDiagnoser.Default)
    .AddDiagnoser(ThreadingDiagnoser.Default)
    .WithOptions(ConfigOptions.DisableLogFile)
    .WithBuildTimeout(TimeSpan.FromMinutes(10)); // the per-job rebuild can take minutes on a busy 2-core machine
if (smoke)
{
    config = config
        .AddJob(Job.Dry.WithToolchain(InProcessEmitToolchain.Instance).WithId("smoke"))
        .WithOptions(ConfigOptions.JoinSummary);
}

var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config).ToList();

// Fail the process (and so CI) when any benchmark did not run cleanly.
bool failed = summaries.Count == 0 || summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success));
return failed ? 1 : 0;
