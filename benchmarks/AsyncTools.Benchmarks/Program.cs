using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// Every benchmark class compares against a BCL or peer baseline in the same run (Baseline = true).
//   dotnet run -c Release --project benchmarks/AsyncTools.Benchmarks -- --filter '*'
// CI compiles and smoke-runs everything in-process with one iteration each:
//   dotnet run -c Release --project benchmarks/AsyncTools.Benchmarks -- --filter '*' --smoke
bool smoke = args.Contains("--smoke");
args = args.Where(a => a != "--smoke").ToArray();

IConfig config = DefaultConfig.Instance
    .AddDiagnoser(MemoryDiagnoser.Default)
    .WithOptions(ConfigOptions.JoinSummary | ConfigOptions.DisableLogFile);
if (smoke)
{
    config = config.AddJob(Job.Dry.WithToolchain(InProcessEmitToolchain.Instance).WithId("smoke"));
}

var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config).ToList();

// Fail the process (and so CI) when any benchmark did not run cleanly.
bool failed = summaries.Count == 0 || summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success));
return failed ? 1 : 0;
