// The package smoke checks: uses both packages the way a consumer would. Compiled twice: into the net10.0 consumer,
// and into a netstandard2.0 library (Checks.NetStandard.csproj) whose LINQ over IAsyncEnumerable comes from the
// System.Linq.AsyncEnumerable package that AsyncIterTools' netstandard2.0 asset depends on.
using AsyncIterTools;
using AsyncPrimitives;

namespace PackageSmoke;

public static class Checks
{
    public static async Task RunAsync()
    {
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

        // AsyncIter operators and System.Linq.AsyncEnumerable operators in one query: no name is ambiguous.
        // 1 2 3 ... -> odd: 1 3 5 7 9 11 -> x10: 10 30 50 70 90 110 -> running sum: 10 40 90 160 250 360 -> every 2nd from 1.
        long[] query = await AsyncIter.Count(1)
            .Where(x => x % 2 == 1)             // LINQ
            .Select(x => x * 10)                // LINQ
            .Accumulate((a, b) => a + b)        // AsyncIter
            .Slice(1, null, 2)                  // AsyncIter
            .Take(3)                            // LINQ
            .ToArrayAsync();                    // LINQ
        Check(query.SequenceEqual(new long[] { 40, 160, 360 }), "LINQ and AsyncIter in one query");

        // A queue is an IAsyncEnumerable: LINQ and AsyncIter over it too.
        var items = new AsyncQueue<int>();
        for (int i = 1; i <= 4; i++)
        {
            Check(items.TryPut(i), "AsyncQueue accepts");
        }

        (int Previous, int Current)[] pairs = await items.Take(4).Pairwise().Where(p => p.Current % 2 == 0).ToArrayAsync();
        Check(pairs.SequenceEqual(new[] { (1, 2), (3, 4) }), "LINQ and AsyncIter over an AsyncQueue");
    }

    public static void Check(bool condition, string what)
    {
        if (!condition)
        {
            Console.Error.WriteLine("package smoke FAILED: " + what);
            Environment.Exit(1);
        }
    }
}
