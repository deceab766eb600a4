using System.Linq;
using AsyncIterTools;
using AsyncIterTools.Tests;

namespace LinqCoexistence;

/// <summary>
/// Compiles against both System.Linq (in-box System.Linq.AsyncEnumerable on net10.0) and AsyncIterTools in one file:
/// if an operator name collided, this file would fail to build with CS0121.
/// </summary>
public sealed class LinqCoexistenceTests
{
    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task LinqAndAsyncIter_OnTheSameSource_ComposeWithoutAmbiguity(SourceMode mode)
    {
        IAsyncEnumerable<int> source = Sources.From(Enumerable.Range(1, 10), mode);

        int[] pipeline = await source
            .Where(x => x % 2 == 1)          // LINQ
            .Select(x => x * 10)             // LINQ
            .Accumulate((a, b) => a + b)     // AsyncIter
            .Slice(1, null, 2)               // AsyncIter
            .Take(2)                         // LINQ
            .ToArrayAsync();                 // LINQ
        // odd: 1 3 5 7 9 -> 10 30 50 70 90 -> 10 40 90 160 250 -> 40 160
        pipeline.Should().Equal(40, 160);

        (int Previous, int Current)[] pairs = await source.Take(4).Pairwise().ToArrayAsync();
        pairs.Should().Equal((1, 2), (2, 3), (3, 4));

        (int First, int Second)[] zipped = await source.Zip(source.Skip(1)).Take(2).ToArrayAsync();
        zipped.Should().Equal((1, 2), (2, 3));

        int[][] chunks = await source.Chunk(4).ToArrayAsync();
        int[][] flattenedBack = await chunks.ToAsyncEnumerable().Flatten().Chunk(4).ToArrayAsync();
        flattenedBack.Should().BeEquivalentTo(chunks, o => o.WithStrictOrdering());

        IGrouping<bool, int>[] groups = await source.GroupAdjacent(x => x <= 3).ToArrayAsync();
        groups.Select(g => g.Count()).Should().Equal(3, 7);

        int[] chained = await source.Take(2).Chain(AsyncIter.Repeat(0, 2)).Concat(source.Take(1)).ToArrayAsync();
        chained.Should().Equal(1, 2, 0, 0, 1);

        long[] counted = await AsyncIter.Count(5).Take(3).ToArrayAsync();
        counted.Should().Equal(5L, 6L, 7L);

        int[] linqRepeat = await AsyncEnumerable.Repeat(7, 2).Cycle().Take(3).ToArrayAsync();
        linqRepeat.Should().Equal(7, 7, 7);
    }
}
