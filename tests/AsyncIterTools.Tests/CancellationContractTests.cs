namespace AsyncIterTools.Tests;

/// <summary>
/// The concurrent operators honour the caller's token themselves: once it is cancelled, no further item is yielded and
/// enumeration ends with <see cref="OperationCanceledException"/>, even when the source and the work ignore the token.
/// </summary>
public sealed class CancellationContractTests
{
    public static TheoryData<string> Operators => new() { "Merge", "MergeLimited", "Map", "MapUnordered", "Prefetch", "BatchTimed", "Tee", "AsCompletedWork", "AsCompletedTasks" };

    [Theory, MemberData(nameof(Operators))]
    public async Task CancelledMidway_YieldsNothingMore_ThenThrows_EvenWhenTheSourceIgnoresTheToken(string op)
    {
        IAsyncEnumerable<int> sequence = Build(op);
        await OperatorChecks.CancelAfterAsync(sequence, after: 2).WaitAsync(TestWork.Bound);
    }

    private static IAsyncEnumerable<int> Build(string op)
    {
        IAsyncEnumerable<int> Source(int start = 0) => Sources.IgnoringToken(Enumerable.Range(start, 100));
        return op switch
        {
            "Merge" => AsyncIter.Merge(Source(), Source(1000)),
            "MergeLimited" => AsyncIter.Merge(new[] { Source(), Source(1000) }.AsEnumerable(), 1),
            "Map" => Source().Map((x, _) => new ValueTask<int>(x), 4),
            "MapUnordered" => Source().MapUnordered((x, _) => new ValueTask<int>(x), 4),
            "Prefetch" => Source().Prefetch(4),
            "BatchTimed" => Source().Batch(1, TimeSpan.FromHours(1)).Select(b => b[0]),
            "Tee" => Source().Tee(2)[0],
            "AsCompletedWork" => AsyncIter.AsCompleted(Enumerable.Range(0, 100).Select(i => (Func<CancellationToken, Task<int>>)(_ => Task.FromResult(i)))),
            "AsCompletedTasks" => AsyncIter.AsCompleted(Enumerable.Range(0, 100).Select(Task.FromResult)),
            _ => throw new ArgumentOutOfRangeException(nameof(op)),
        };
    }
}
