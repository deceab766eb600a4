namespace AsyncIterTools.Tests;

public sealed class GatherAsyncTests
{
    private static Func<CancellationToken, Task<int>> Const(int value) => _ => Task.FromResult(value);

    [Fact]
    public async Task InvalidArguments_ThrowAtTheCall()
    {
        FluentActions.Invoking(() => { _ = AsyncIter.GatherAsync<int>(null!); }).Should().Throw<ArgumentNullException>().WithParameterName("work");
        FluentActions.Invoking(() => { _ = AsyncIter.GatherAsync(new[] { Const(1) }, 0); }).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxConcurrency");
        FluentActions.Invoking(() => { _ = AsyncIter.GatherAsync(new[] { Const(1) }, -1); }).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxConcurrency");
        (await AsyncIter.GatherAsync(new[] { Const(1) }, 1)).Should().Equal(1);
    }

    [Fact]
    public async Task Empty_GivesEmpty()
    {
        (await AsyncIter.GatherAsync(Array.Empty<Func<CancellationToken, Task<int>>>())).Should().BeEmpty();
    }

    [Theory]
    [InlineData(null)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(100)]
    public async Task Results_AreInInputOrder_WhateverTheCompletionOrder(int? max)
    {
        // Later items complete first: each waits for a number of yields decreasing with its index.
        var work = Enumerable.Range(0, 20).Select(i => (Func<CancellationToken, Task<int>>)(async _ =>
        {
            for (int k = 0; k < 20 - i; k++)
            {
                await Task.Yield();
            }

            return i * i;
        }));

        int[] results = await AsyncIter.GatherAsync(work, max).WaitAsync(TestWork.Bound);
        results.Should().Equal(Enumerable.Range(0, 20).Select(i => i * i));
    }

    [Fact]
    public async Task PeakConcurrency_ReachesButNeverExceedsMax_AndStartsInInputOrder()
    {
        var probe = new ConcurrencyProbe(max: 4);
        var work = Enumerable.Range(0, 30).Select(i => (Func<CancellationToken, Task<int>>)(ct => probe.RunAsync(i, probe.Held, ct)));

        Task<int[]> gathered = AsyncIter.GatherAsync(work, 4);
        await probe.AssertHeldAtMaxThenReleaseAsync();
        int[] results = await gathered.WaitAsync(TestWork.Bound);

        results.Should().Equal(Enumerable.Range(0, 30));
        probe.Peak.Should().Be(4);
        probe.StartOrder.Should().Equal(Enumerable.Range(0, 30));
        probe.InFlight.Should().Be(0);
    }

    [Fact]
    public async Task Work_IsEnumeratedLazily_AsSlotsFreeUp_AndDisposed()
    {
        var gates = Enumerable.Range(0, 5).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var started = Enumerable.Range(0, 5).Select(_ => new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(Enumerable.Range(0, 5).Select(i => (Func<CancellationToken, Task<int>>)(_ =>
        {
            started[i].SetResult(true);
            return gates[i].Task;
        })));

        Task<int[]> gather = AsyncIter.GatherAsync(work, 2);
        work.Pulled.Should().Be(2);

        gates[0].SetResult(0);
        await started[2].Task.WaitAsync(TestWork.Bound);
        work.Pulled.Should().Be(3);
        started[3].Task.IsCompleted.Should().BeFalse();
        for (int i = 1; i < gates.Length; i++)
        {
            gates[i].SetResult(i);
        }

        (await gather.WaitAsync(TestWork.Bound)).Should().Equal(0, 1, 2, 3, 4);
        work.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task FirstFailure_CancelsRunningWork_AwaitsIt_StartsNothingNew_AndIsThrownAsIs()
    {
        var probe = new ConcurrencyProbe();
        var boom = new InvalidOperationException("boom");
        var failGate = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var never = new TaskCompletionSource<bool>().Task;
        var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(Enumerable.Range(0, 10).Select(i => (Func<CancellationToken, Task<int>>)(async ct =>
        {
            if (i == 1)
            {
                await failGate.Task;
                throw boom;
            }

            return await probe.RunAsync(i, never, ct);
        })));

        Task<int[]> gather = AsyncIter.GatherAsync(work, 3);
        probe.Started.Should().Be(2);
        failGate.SetResult(true);

        (await FluentActions.Awaiting(() => gather.WaitAsync(TestWork.Bound)).Should().ThrowAsync<InvalidOperationException>()).Which.Should().BeSameAs(boom);
        probe.Started.Should().Be(2);
        probe.Cancelled.Should().Be(2);
        probe.InFlight.Should().Be(0);
        work.Pulled.Should().Be(3);
        work.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task Failure_WaitsForWorkThatIgnoresItsToken()
    {
        var stubborn = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var politeCancelled = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var failGate = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var work = new Func<CancellationToken, Task<int>>[]
        {
            _ => stubborn.Task,
            async ct =>
            {
                try
                {
                    await Task.Delay(Timeout.Infinite, ct);
                    return 0;
                }
                finally
                {
                    politeCancelled.SetResult(true);
                }
            },
            async _ =>
            {
                await failGate.Task;
                throw new FormatException();
            },
        };

        Task<int[]> gather = AsyncIter.GatherAsync(work);
        failGate.SetResult(true);
        await politeCancelled.Task.WaitAsync(TestWork.Bound);
        gather.IsCompleted.Should().BeFalse();

        stubborn.SetResult(1);
        await FluentActions.Awaiting(() => gather.WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
    }

    [Fact]
    public async Task FactoryThatThrowsSynchronously_IsAFailure()
    {
        var work = new Func<CancellationToken, Task<int>>[] { Const(1), _ => throw new FormatException() };
        await FluentActions.Awaiting(() => AsyncIter.GatherAsync(work)).Should().ThrowAsync<FormatException>();
    }

    [Fact]
    public async Task FactoryThatThrowsSynchronously_NothingStartsAfterIt_AndTheRunningWorkIsCancelled()
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(Enumerable.Range(0, 10).Select(i =>
            (Func<CancellationToken, Task<int>>)(ct => i == 2 ? throw new FormatException() : probe.RunAsync(i, never, ct))));

        await FluentActions.Awaiting(() => AsyncIter.GatherAsync(work, maxConcurrency: 6).WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
        probe.Started.Should().Be(2, "the pieces before the one that failed ran, and none after it started");
        probe.Cancelled.Should().Be(2);
        work.Pulled.Should().Be(3);
    }

    [Fact]
    public async Task EnumeratingTheWorkFails_RunningWorkIsCancelledAndTheFailureThrown()
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        IEnumerable<Func<CancellationToken, Task<int>>> Work()
        {
            yield return ct => probe.RunAsync(0, never, ct);
            throw new FormatException();
        }

        await FluentActions.Awaiting(() => AsyncIter.GatherAsync(Work()).WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
        probe.Cancelled.Should().Be(1);
        probe.InFlight.Should().Be(0);
    }

    [Fact]
    public async Task CallerCancellation_CancelsRunningWork_AndThrowsAfterItFinished()
    {
        var probe = new ConcurrencyProbe(max: 2);
        var never = new TaskCompletionSource<bool>().Task;
        using var cts = new CancellationTokenSource();
        var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(Enumerable.Range(0, 10).Select(i => (Func<CancellationToken, Task<int>>)(ct => probe.RunAsync(i, never, ct))));

        Task<int[]> gather = AsyncIter.GatherAsync(work, 2, cts.Token);
        await probe.ReachedMax.WaitAsync(TestWork.Bound);
        cts.Cancel();

        await FluentActions.Awaiting(() => gather.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        probe.InFlight.Should().Be(0);
        probe.Started.Should().Be(2);
        work.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task AFailureBeforeTheCallerCancels_IsThrown_NotTheCancellation()
    {
        using var cts = new CancellationTokenSource();
        var first = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var second = new TaskCompletionSource<int>(); // its failure is queued where it is set
        var work = new Func<CancellationToken, Task<int>>[]
        {
            _ => first.Task,
            _ => second.Task,
            _ =>
            {
                // Started by the gathering once piece 0 is done, before it takes the next completion: piece 1 fails on
                // its own, and only then does the caller cancel.
                second.SetException(new FormatException("failed on its own"));
                cts.Cancel();
                return Task.FromResult(2);
            },
        };

        Task<int[]> gather = AsyncIter.GatherAsync(work, 2, cts.Token);
        first.SetResult(0);

        await FluentActions.Awaiting(() => gather.WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<FormatException>("the failure came before the cancellation: it is the first failure, not the cancellation's doing");
    }

    [Fact]
    public async Task WorkFailingBecauseItWatchesTheCallersTokenItself_IsReportedAsTheCancellation()
    {
        using var cts = new CancellationTokenSource();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var work = new Func<CancellationToken, Task<int>>[]
        {
            _ =>
            {
                started.SetResult();
                return TestWork.FailsWhenCancelled(cts.Token); // the caller's token, as in `_ => http.GetAsync(url, ct)`
            },
        };

        Task<int[]> gather = AsyncIter.GatherAsync(work, null, cts.Token);
        await started.Task.WaitAsync(TestWork.Bound);
        TestWork.CompleteInline(cts.Cancel); // the piece fails inside the cancellation, before the operator's own token is cancelled

        await FluentActions.Awaiting(() => gather.WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<OperationCanceledException>("the piece failed after the caller cancelled, because of it");
    }

    [Fact]
    public async Task PreCancelledToken_StartsNothing()
    {
        var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(new[] { Const(1) });
        await FluentActions.Awaiting(() => AsyncIter.GatherAsync(work, null, new CancellationToken(true))).Should().ThrowAsync<OperationCanceledException>();
        work.Pulled.Should().Be(0);
    }

    [Fact]
    public async Task NullElement_FailsWithArgumentNullNamingWork_NullTask_FailsWithInvalidOperation_AfterRunningWorkFinished()
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        Func<CancellationToken, Task<int>> parked = ct => probe.RunAsync(0, never, ct);

        (await FluentActions.Awaiting(() => AsyncIter.GatherAsync(new[] { parked, null! }).WaitAsync(TestWork.Bound))
            .Should().ThrowExactlyAsync<ArgumentNullException>()).Which.ParamName.Should().Be("work");
        await FluentActions.Awaiting(() => AsyncIter.GatherAsync(new[] { parked, _ => null! }).WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<InvalidOperationException>().WithMessage("*null task*");
        probe.Started.Should().Be(2);
        probe.Cancelled.Should().Be(2);
        probe.InFlight.Should().Be(0);
    }

    [Fact]
    public async Task AWorkSequenceWhoseDisposalThrows_DoesNotHideTheFirstFailure()
    {
        var failure = new FormatException("the piece's failure");
        Func<Task> gather = () => AsyncIter.GatherAsync(Sources.DisposingWithFailure(failure, new ArithmeticException("the sequence's disposal")), maxConcurrency: 1);
        (await gather.Should().ThrowAsync<Exception>()).Which.Should().BeSameAs(failure);
    }

    [Fact]
    public async Task AWorkSequenceWhoseDisposalThrows_FailsTheGathering()
    {
        var disposal = new ArithmeticException("the sequence's disposal");
        Func<Task> gather = () => AsyncIter.GatherAsync(Sources.DisposingWithFailure(null, disposal), maxConcurrency: 1);
        (await gather.Should().ThrowAsync<Exception>()).Which.Should().BeSameAs(disposal);
    }

    /// <summary>The work's enumerator fails to dispose after its last element (a hand-written enumerator, whose
    /// <c>MoveNext</c> has returned false; an iterator's <c>finally</c> would throw from <c>MoveNext</c> instead): with
    /// nothing failing before it, that failure is the gathering's, as a <c>foreach</c> over the work would throw it.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AWorkEnumeratorThatFailsToDisposeAfterItsEnd_FailsTheGathering(bool settled)
    {
        var disposal = new ArithmeticException("the enumerator's disposal");
        var work = new EnumeratorDisposingWithFailure(disposal, Const(1), Const(2));
        Func<Task> gather = settled
            ? () => AsyncIter.GatherSettledAsync(work, maxConcurrency: 1)
            : () => AsyncIter.GatherAsync(work, maxConcurrency: 1);

        (await FluentActions.Awaiting(() => gather().WaitAsync(TestWork.Bound)).Should().ThrowAsync<ArithmeticException>()).Which.Should().BeSameAs(disposal);
        work.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task AWorkSequenceWhoseDisposalThrows_DoesNotHideTheCancellation()
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var cts = new CancellationTokenSource();
        var work = Sources.RunningUntilCancelled_DisposingWithFailure(started, new ArithmeticException("the sequence's disposal"));
        Task<int[]> gather = AsyncIter.GatherAsync(work, 1, cts.Token);
        await started.Task.WaitAsync(TestWork.Bound);
        cts.Cancel();
        await FluentActions.Awaiting(() => gather.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
    }

    /// <summary>Enumerating the work never sees the caller's token: its failure is thrown as is, also when the caller
    /// cancels while it is read (here from inside it, deterministically).</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AFailureEnumeratingWork_ReadAsTheCallerCancels_IsThrownAsIs(bool settled)
    {
        using var cts = new CancellationTokenSource();
        IEnumerable<Func<CancellationToken, Task<int>>> Work()
        {
            yield return _ => Task.FromResult(1);
            cts.Cancel();
            throw new FormatException("the sequence of work failed");
        }

        Func<Task> act = settled
            ? () => AsyncIter.GatherSettledAsync(Work(), null, cts.Token)
            : () => AsyncIter.GatherAsync(Work(), null, cts.Token);
        await FluentActions.Awaiting(() => act().WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
    }
}
