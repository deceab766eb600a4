namespace AsyncIterTools.Tests;

/// <summary>
/// The shared rule of docs/asynciter.md for a source that fails, whichever way it fails (its
/// <c>GetAsyncEnumerator</c>, a move that throws or is faulted, its <c>Current</c>, its disposal): the failure surfaces
/// unchanged from the operator, and every enumerator of the source is disposed exactly once. Every operator that
/// reads a source.
/// </summary>
public sealed class SourceFailureContractTests
{
    public static IEnumerable<object[]> Cases()
    {
        string[] operators =
        [
            "Map", "MapUnordered", "Merge", "Prefetch", "BatchTimed", "Batch", "Tee", "Before", "After", "Chain", "Flatten",
            "ZipLongest", "Compress", "Product", "Slice", "Pairwise", "Accumulate", "GroupAdjacent", "Cycle", "Permutations",
        ];
        foreach (string op in operators)
        {
            foreach (Hostility how in Enum.GetValues<Hostility>())
            {
                yield return [op, how];
            }
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task TheFailureSurfacesUnchanged_AndTheSourceIsDisposedOnce(string op, Hostility how)
    {
        var failure = new FormatException("the source failed: " + how);
        var source = new HostileSource(how, failure);
        Func<Task> read = async () =>
        {
            await foreach (object _ in Apply(op, source))
            {
            }
        };

        (await read.Should().ThrowAsync<Exception>()).Which.Should().BeSameAs(failure);
        source.Disposals.Should().Be(source.Enumerators, "each enumerator is disposed exactly once");
    }

    private static IAsyncEnumerable<object> Apply(string op, IAsyncEnumerable<int> s) => op switch
    {
        "Map" => s.Map((x, _) => new ValueTask<int>(x), 2).Select(x => (object)x),
        "MapUnordered" => s.MapUnordered((x, _) => new ValueTask<int>(x), 2).Select(x => (object)x),
        "Merge" => AsyncIter.Merge(s).Select(x => (object)x),
        "Prefetch" => s.Prefetch(2).Select(x => (object)x),
        "BatchTimed" => s.Batch(2, TimeSpan.FromHours(1)).Select(x => (object)x),
        "Batch" => s.Batch(2).Select(x => (object)x),
        "Tee" => s.Tee(1)[0].Select(x => (object)x),
        "Before" => s.BeforeAndAfter(_ => true).Before.Select(x => (object)x),
        "After" => s.BeforeAndAfter(_ => true).After.Select(x => (object)x),
        "Chain" => AsyncIter.Chain(s).Select(x => (object)x),
        "Flatten" => AsyncEnumerable.Repeat(s, 1).Flatten().Select(x => (object)x),
        "ZipLongest" => AsyncIter.ZipLongest(s, AsyncEnumerable.Range(0, 1)).Select(x => (object)x),
        "Compress" => s.Compress(AsyncEnumerable.Repeat(true, 10)).Select(x => (object)x),
        "Product" => AsyncIter.Product(AsyncEnumerable.Range(0, 1), s).Select(x => (object)x),
        "Slice" => s.Slice(0, null).Select(x => (object)x),
        "Pairwise" => s.Pairwise().Select(x => (object)x),
        "Accumulate" => s.Accumulate((a, b) => a + b).Select(x => (object)x),
        "GroupAdjacent" => s.GroupAdjacent(x => x).Select(x => (object)x),
        "Cycle" => s.Cycle().Take(10).Select(x => (object)x),
        "Permutations" => s.Permutations(1).Select(x => (object)x),
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, null),
    };
}
