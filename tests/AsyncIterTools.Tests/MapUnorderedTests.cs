namespace AsyncIterTools.Tests;

/// <summary>MapUnordered: the shared contract, plus what completion order adds.</summary>
public sealed class MapUnorderedTests : MapContractTests
{
    protected override bool Ordered => false;

    protected override IAsyncEnumerable<TResult> Apply<T, TResult>(IAsyncEnumerable<T> source, Func<T, CancellationToken, ValueTask<TResult>> selector, int maxConcurrency) =>
        source.MapUnordered(selector, maxConcurrency);

    [Fact]
    public async Task Results_AreYieldedInCompletionOrder()
    {
        var gates = Enumerable.Range(0, 3).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var source = Sources.Of(SourceMode.Synchronous, 0, 1, 2);
        await using IAsyncEnumerator<int> e = source.MapUnordered((x, _) => new ValueTask<int>(gates[x].Task), 3).GetAsyncEnumerator();
        var seen = new List<int>();
        foreach (int i in new[] { 2, 0, 1 })
        {
            ValueTask<bool> move = e.MoveNextAsync();
            gates[i].SetResult(i * 10);
            (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
            seen.Add(e.Current);
        }

        seen.Should().Equal(20, 0, 10);
        (await e.MoveNextAsync()).Should().BeFalse();
    }

    [Fact]
    public async Task OneSlowCall_DoesNotHoldBackTheOthers()
    {
        var slow = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var source = Sources.From(Enumerable.Range(0, 20), SourceMode.Synchronous);
        await using IAsyncEnumerator<int> e = source.MapUnordered((x, _) => x == 0 ? new ValueTask<int>(slow.Task) : new ValueTask<int>(x), 2).GetAsyncEnumerator();
        for (int i = 1; i < 20; i++)
        {
            (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
            e.Current.Should().Be(i);
        }

        ValueTask<bool> last = e.MoveNextAsync();
        slow.SetResult(0);
        (await last.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);
    }
}
