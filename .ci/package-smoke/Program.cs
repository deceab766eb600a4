// Package smoke test: uses both packages the way a consumer would, checks the results, prints the asset it ran.
using System.Reflection;
using AsyncIterTools;
using AsyncPrimitives;

var gate = new AsyncLock();
int counter = 0;
await Task.WhenAll(Enumerable.Range(0, 50).Select(async _ =>
{
    using (await gate.AcquireAsync())
    {
        int read = counter;
        await Task.Yield();
        counter = read + 1;
    }
}));
Check(counter == 50, "AsyncLock serializes");

var semaphore = new AsyncSemaphore(2, 2);
Check(semaphore.TryAcquire() && semaphore.TryAcquire() && !semaphore.TryAcquire(), "AsyncSemaphore counts");

var queue = new AsyncPriorityQueue<(int Priority, string Name)>(maxSize: 4);
await queue.PutAsync((2, "b"));
await queue.PutAsync((1, "a"));
Check((await queue.GetAsync()).Name == "a" && queue.TryGet(out var next) && next.Name == "b", "AsyncPriorityQueue orders");
queue.TaskDone();
queue.TaskDone();
await queue.JoinAsync(TimeSpan.FromSeconds(5));

var chained = new List<long>();
await foreach (long x in AsyncIter.Count(0, 2).Slice(3).Chain(AsyncIter.Count(100).Slice(2)))
{
    chained.Add(x);
}

Check(chained.SequenceEqual(new long[] { 0, 2, 4, 100, 101 }), "Count/Slice/Chain");

string asset = typeof(AsyncLock).Assembly.GetCustomAttribute<System.Runtime.Versioning.TargetFrameworkAttribute>()?.FrameworkName ?? "?";
string iterAsset = typeof(AsyncIter).Assembly.GetCustomAttribute<System.Runtime.Versioning.TargetFrameworkAttribute>()?.FrameworkName ?? "?";
#if NETSTANDARD_ASSET
Check(asset.StartsWith(".NETStandard", StringComparison.Ordinal) && iterAsset.StartsWith(".NETStandard", StringComparison.Ordinal), "runs the netstandard2.0 asset");
#else
Check(asset.StartsWith(".NETCoreApp", StringComparison.Ordinal) && iterAsset.StartsWith(".NETCoreApp", StringComparison.Ordinal), "runs the net10.0 asset");
#endif
Console.WriteLine($"package smoke OK: AsyncPrimitives [{asset}], AsyncIterTools [{iterAsset}]");
return 0;

static void Check(bool condition, string what)
{
    if (!condition)
    {
        Console.Error.WriteLine("package smoke FAILED: " + what);
        Environment.Exit(1);
    }
}
