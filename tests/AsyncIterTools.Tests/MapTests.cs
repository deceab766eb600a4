namespace AsyncIterTools.Tests;

/// <summary>Map: the shared contract, plus what source order adds (the window and its head).</summary>
public sealed class MapTests : MapContractTests
{
    protected override bool Ordered => true;

    protected override IAsyncEnumerable<TResult> Apply<T, TResult>(IAsyncEnumerable<T> source, Func<T, CancellationToken, ValueTask<TResult>> selector, int maxConcurrency) =>
        source.Map(selector, maxConcurrency);

    [Fact]
    public async Task ReusedSlots_StartPendingAgain_ResultsStayInSourceOrder()
    {
        // With 2 slots, items 2 and 3 reuse the slots of items 0 and 1. A reused slot must not look finished.
        var gates = Enumerable.Range(0, 4).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        IAsyncEnumerator<int> e = Sources.From(Enumerable.Range(0, 4)).Map((x, _) => new ValueTask<int>(gates[x].Task), 2).GetAsyncEnumerator();
        ValueTask<bool> move = e.MoveNextAsync();
        gates[0].SetResult(0);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);
        move = e.MoveNextAsync();
        gates[1].SetResult(10);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(10);

        move = e.MoveNextAsync();
        move.IsCompleted.Should().BeFalse("item 2 (in item 0's old slot) is still running");
        gates[3].SetResult(30);
        gates[2].SetResult(20);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(20);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(30);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeFalse();
        await e.DisposeAsync().AsTask().WaitAsync(TestWork.Bound);
    }

    [Fact]
    public async Task OutOfOrderCompletions_AreYieldedInSourceOrder()
    {
        var gates = Enumerable.Range(0, 3).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var source = Sources.Of(SourceMode.Synchronous, 0, 1, 2);
        Task<List<int>> all = source.Map((x, _) => new ValueTask<int>(gates[x].Task), 3).ToListAsync().AsTask();
        gates[2].SetResult(20);
        gates[1].SetResult(10);
        gates[0].SetResult(0);
        (await all.WaitAsync(TestWork.Bound)).Should().Equal(0, 10, 20);
    }

    [Fact]
    public async Task SlowHead_BoundsTheWindow_NoMoreThanMaxStartedAndNotYielded()
    {
        // Memory is O(maxConcurrency): results that finished behind a slow head count against the window until yielded.
        var head = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new List<int>();
        var source = Sources.From(Enumerable.Range(0, 10));
        await using IAsyncEnumerator<int> e = source.Map(
            (x, _) =>
            {
                started.Add(x);
                return x == 0 ? new ValueTask<int>(head.Task) : new ValueTask<int>(x);
            },
            3).GetAsyncEnumerator();

        ValueTask<bool> first = e.MoveNextAsync();
        first.IsCompleted.Should().BeFalse("the head is still running");
        started.Should().Equal(new[] { 0, 1, 2 }, "1 and 2 are done, but the window of 3 is full until 0 is yielded");
        source.Produced.Should().Be(3);

        head.SetResult(0);
        (await first.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);
        var rest = new List<int>();
        while (await e.MoveNextAsync())
        {
            rest.Add(e.Current);
        }

        rest.Should().Equal(Enumerable.Range(1, 9));
    }
}
