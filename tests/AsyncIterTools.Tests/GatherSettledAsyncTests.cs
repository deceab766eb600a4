namespace AsyncIterTools.Tests;

public sealed class GatherSettledAsyncTests
{
    [Fact]
    public void InvalidArguments_ThrowAtTheCall()
    {
        FluentActions.Invoking(() => { _ = AsyncIter.GatherSettledAsync<int>(null!); }).Should().Throw<ArgumentNullException>().WithParameterName("work");
        FluentActions.Invoking(() => { _ = AsyncIter.GatherSettledAsync(Array.Empty<Func<CancellationToken, Task<int>>>(), 0); })
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxConcurrency");
    }

    /// <summary>
    /// docs/asynciter.md, <c>Outcome&lt;T&gt;</c>: a settled gather over a collection of work allocates one array and, once
    /// its <c>maxConcurrency</c> window is full, nothing per success. Pieces that complete at once keep the whole gathering
    /// on this thread, so this thread's allocations are all of it: per piece, no more than its outcome's slot in the array.
    /// </summary>
    [Fact]
    public void OverACollectionOfWork_AllocatesNothingPerSuccessButItsOutcomesSlot()
    {
        Task<int> done = Task.FromResult(1);
        Func<CancellationToken, Task<int>> piece = _ => done;
        Func<CancellationToken, Task<int>>[] few = Enumerable.Repeat(piece, 100).ToArray();
        Func<CancellationToken, Task<int>>[] many = Enumerable.Repeat(piece, 10_100).ToArray();

        long Allocated(Func<CancellationToken, Task<int>>[] work)
        {
            long least = long.MaxValue;
            for (int attempt = 0; attempt < 5; attempt++)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                Task<Outcome<int>[]> gathering = AsyncIter.GatherSettledAsync(work, maxConcurrency: 2);
                least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
                gathering.IsCompletedSuccessfully.Should().BeTrue("every piece completes at once");
                gathering.Result.Should().HaveCount(work.Length).And.OnlyContain(o => o.IsSuccess && o.Value == 1);
            }

            return least;
        }

        Allocated(many); // warm up
        double perPiece = (double)(Allocated(many) - Allocated(few)) / (many.Length - few.Length);

        perPiece.Should().BeLessThan(System.Runtime.CompilerServices.Unsafe.SizeOf<Outcome<int>>() + 4, "a success costs its outcome's slot in the one array, nothing more");
    }

    [Fact]
    public async Task Empty_GivesEmpty()
    {
        (await AsyncIter.GatherSettledAsync(Array.Empty<Func<CancellationToken, Task<int>>>())).Should().BeEmpty();
    }

    [Theory]
    [InlineData(null)]
    [InlineData(1)]
    [InlineData(3)]
    public async Task Failures_BecomeOutcomes_InInputOrder_AndDoNotStopTheOthers(int? max)
    {
        var work = Enumerable.Range(0, 12).Select(i => (Func<CancellationToken, Task<int>>)(async _ =>
        {
            await Task.Yield();
            return i % 3 == 1 ? throw new FormatException(i.ToString(System.Globalization.CultureInfo.InvariantCulture)) : i;
        }));

        Outcome<int>[] outcomes = await AsyncIter.GatherSettledAsync(work, max).WaitAsync(TestWork.Bound);

        outcomes.Should().HaveCount(12);
        for (int i = 0; i < 12; i++)
        {
            if (i % 3 == 1)
            {
                outcomes[i].IsSuccess.Should().BeFalse();
                outcomes[i].Exception.Should().BeOfType<FormatException>().Which.Message.Should().Be(i.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            else
            {
                outcomes[i].Value.Should().Be(i);
            }
        }
    }

    [Fact]
    public async Task SynchronousThrowAndCancelledTask_AreFailedOutcomes()
    {
        // doc: asynciter-gathersettled
        var work = new Func<CancellationToken, Task<int>>[]
        {
            _ => throw new FormatException(),
            _ => Task.FromCanceled<int>(new CancellationToken(true)),
            _ => Task.FromResult(3),
        };

        Outcome<int>[] outcomes = await AsyncIter.GatherSettledAsync(work);
        outcomes[0].Exception.Should().BeOfType<FormatException>();
        outcomes[1].Exception.Should().BeAssignableTo<OperationCanceledException>();
        outcomes[2].Value.Should().Be(3);
        // end doc
    }

    [Fact]
    public async Task PeakConcurrency_ReachesButNeverExceedsMax()
    {
        var probe = new ConcurrencyProbe(max: 3);
        var work = Enumerable.Range(0, 20).Select(i => (Func<CancellationToken, Task<int>>)(ct => probe.RunAsync(i, probe.Held, ct)));

        Task<Outcome<int>[]> gathered = AsyncIter.GatherSettledAsync(work, 3);
        await probe.AssertHeldAtMaxThenReleaseAsync();
        Outcome<int>[] outcomes = await gathered.WaitAsync(TestWork.Bound);

        outcomes.Select(o => o.Value).Should().Equal(Enumerable.Range(0, 20));
        probe.Peak.Should().Be(3);
        probe.StartOrder.Should().Equal(Enumerable.Range(0, 20));
    }

    [Fact]
    public async Task CallerCancellation_Throws_AfterRunningWorkFinished()
    {
        var probe = new ConcurrencyProbe(max: 2);
        var never = new TaskCompletionSource<bool>().Task;
        using var cts = new CancellationTokenSource();
        var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(Enumerable.Range(0, 5).Select(i => (Func<CancellationToken, Task<int>>)(ct => probe.RunAsync(i, never, ct))));

        Task<Outcome<int>[]> gather = AsyncIter.GatherSettledAsync(work, 2, cts.Token);
        await probe.ReachedMax.WaitAsync(TestWork.Bound);
        cts.Cancel();

        await FluentActions.Awaiting(() => gather.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        probe.InFlight.Should().Be(0);
        probe.Cancelled.Should().Be(2);
        work.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task ANullFactoryAfterPiecesThatCompleted_FailsTheWholeGathering_NotAnOutcome()
    {
        var work = new Func<CancellationToken, Task<int>>?[] { _ => Task.FromResult(1), _ => Task.FromException<int>(new FormatException()), null };

        await FluentActions.Awaiting(() => AsyncIter.GatherSettledAsync(work!, 2)).Should().ThrowAsync<ArgumentNullException>().WithParameterName("work");
    }
}
