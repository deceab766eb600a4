namespace AsyncIterTools.Tests;

/// <summary>The LINQ spellings docs/python-map.md gives for aioitertools builtins compile and behave as stated.</summary>
public sealed class PythonMapTests
{
    private static IAsyncEnumerable<int> Numbers() => new[] { 3, 1, 2 }.ToAsyncEnumerable();

    private static async Task<int> DoubleAsync(int x, CancellationToken ct)
    {
        await Task.Yield();
        ct.ThrowIfCancellationRequested();
        return x * 2;
    }

    [Fact]
    public async Task Builtins_MapToLinq()
    {
        (await Numbers().AllAsync(x => x > 0)).Should().BeTrue();                       // all
        (await Numbers().AnyAsync(x => x > 2)).Should().BeTrue();                       // any
        (await Numbers().Index().ToArrayAsync()).Should().Equal((0, 3), (1, 1), (2, 2)); // enumerate
        (await Numbers().ToListAsync()).Should().Equal(3, 1, 2);                        // list
        (await Numbers().Select(async (int x, CancellationToken ct) => await DoubleAsync(x, ct)).ToArrayAsync())
            .Should().Equal(6, 2, 4);                                                   // map with an async fn
        (await Numbers().MaxByAsync(x => -x)).Should().Be(1);                           // max(key=)
        (await Numbers().MinByAsync(x => -x)).Should().Be(3);                           // min(key=)
        (await Numbers().MaxAsync()).Should().Be(3);
        (await Numbers().MinAsync()).Should().Be(1);
        (await AsyncEnumerable.Empty<int>().FirstOrDefaultAsync(-1)).Should().Be(-1);   // next(itr, default)
        (await Numbers().ToHashSetAsync()).Should().BeEquivalentTo(new[] { 1, 2, 3 });  // set
        (await Numbers().SumAsync()).Should().Be(6);                                    // sum
        (await Numbers().Zip(Numbers()).CountAsync()).Should().Be(3);                   // zip
        (await Numbers().SkipWhile(x => x > 2).ToArrayAsync()).Should().Equal(1, 2);    // dropwhile
        (await Numbers().TakeWhile(x => x > 2).ToArrayAsync()).Should().Equal(3);       // takewhile
        (await Numbers().Take(2).ToListAsync()).Should().Equal(3, 1);                   // take
    }
}
