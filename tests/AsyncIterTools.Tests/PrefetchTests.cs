namespace AsyncIterTools.Tests;

public sealed class PrefetchTests
{
    [Fact]
    public void InvalidArguments_ThrowAtTheCall()
    {
        FluentActions.Invoking(() => ((IAsyncEnumerable<int>)null!).Prefetch(2)).Should().Throw<ArgumentNullException>().WithParameterName("source");
        FluentActions.Invoking(() => Sources.Of(SourceMode.Synchronous, 1).Prefetch(0)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("capacity");
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Values_AreUnchanged_AndTheSourceIsDisposedOnce(SourceMode mode)
    {
        (await Sources.Of<int>(mode).Prefetch(3).ToListAsync()).Should().BeEmpty();
        var source = Sources.From(Enumerable.Range(0, 100), mode);
        (await source.Prefetch(3).ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().Equal(Enumerable.Range(0, 100));
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task SourceError_SurfacesAfterTheItemsBeforeIt(SourceMode mode)
    {
        // doc: asynciter-prefetch
        var source = Sources.Failing(Enumerable.Range(0, 10), failAt: 4, mode);
        var seen = new List<int>();
        Func<Task> act = async () =>
        {
            await foreach (int x in source.Prefetch(2))
            {
                seen.Add(x);
            }
        };

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("source failure");
        seen.Should().Equal(0, 1, 2, 3);
        // end doc
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task ReadAhead_IsBoundedByCapacity_AndBreakStopsTheProducer(SourceMode mode)
    {
        var source = Sources.From(Enumerable.Range(0, 1_000), mode);
        var reachedFull = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        await foreach (int x in source.Prefetch(3))
        {
            // 1 consumed + 3 read ahead: the producer waits for room before it reads the next.
            await source.WhenProduced(4).WaitAsync(TestWork.Bound);

            source.Produced.Should().Be(4);
            source.MoveNextCalls.Should().Be(4);
            break;
        }

        source.Disposals.Should().Be(1);
        source.Produced.Should().Be(4);
    }

    [Fact]
    public async Task Cancellation_EndsAPendingMoveNext_AndStopsTheProducer()
    {
        var gate = new TaskCompletionSource<bool>();
        var pending = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int disposed = 0;
        async IAsyncEnumerable<int> Source([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
        {
            try
            {
                pending.SetResult();
                await gate.Task.WaitAsync(ct);
                yield return 1;
            }
            finally
            {
                Interlocked.Increment(ref disposed);
            }
        }

        using var cts = new CancellationTokenSource();
        IAsyncEnumerator<int> e = Source().Prefetch(2).GetAsyncEnumerator(cts.Token);
        ValueTask<bool> move = e.MoveNextAsync();
        await pending.Task.WaitAsync(TestWork.Bound); // the read-ahead's MoveNextAsync is pending on the gate
        cts.Cancel();
        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        await e.DisposeAsync();
        disposed.Should().Be(1, "the pending move ended and the source was disposed");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task SourcesDisposalFailing_Surfaces_ReadToTheEndOrLeftEarly(bool earlyBreak)
    {
        var source = new TrackingSource<int>(Enumerable.Range(0, 100)) { DisposeFailure = new InvalidOperationException("dispose failed") };
        await FluentActions.Awaiting(() => Sources.ReadAsync(source.Prefetch(4), earlyBreak))
            .Should().ThrowAsync<InvalidOperationException>().WithMessage("dispose failed");
        source.Disposals.Should().Be(1);
    }
}
