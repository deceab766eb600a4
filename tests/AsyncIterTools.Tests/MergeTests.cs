namespace AsyncIterTools.Tests;

public sealed class MergeTests
{
    [Fact]
    public void InvalidArguments_ThrowAtTheCall()
    {
        FluentActions.Invoking(() => AsyncIter.Merge((IAsyncEnumerable<int>[])null!)).Should().Throw<ArgumentNullException>().WithParameterName("sources");
        FluentActions.Invoking(() => AsyncIter.Merge(Sources.Of(SourceMode.Synchronous, 1), null!)).Should().Throw<ArgumentNullException>().WithParameterName("sources");
        FluentActions.Invoking(() => AsyncIter.Merge((IEnumerable<IAsyncEnumerable<int>>)null!, 1)).Should().Throw<ArgumentNullException>().WithParameterName("sources");
        FluentActions.Invoking(() => AsyncIter.Merge(new List<IAsyncEnumerable<int>>(), 0)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxConcurrency");
    }

    [Fact]
    public async Task ASourcesFailure_WaitingToBeTaken_NoSourceIsAskedForMore()
    {
        // b fails while the consumer holds a's first item: a is not asked for its next item before the failure ends
        // the merge.
        var a = new TestWork.GatedMoveSource(ready: 5);
        var b = new TestWork.GatedMoveSource(ready: 0);
        await using IAsyncEnumerator<int> e = AsyncIter.Merge(a, b).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        int movesBefore = a.Moves;

        TestWork.CompleteInline(() => b.FailMove(new FormatException()));

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
        a.Moves.Should().Be(movesBefore);
    }

    [Fact]
    public async Task Empty_GivesEmpty()
    {
        (await AsyncIter.Merge<int>().ToListAsync()).Should().BeEmpty();
        (await AsyncIter.Merge(new List<IAsyncEnumerable<int>>(), 2).ToListAsync()).Should().BeEmpty();
        var empty = Sources.Of<int>(SourceMode.Yielding);
        (await AsyncIter.Merge(empty, Sources.Of<int>(SourceMode.Synchronous)).ToListAsync()).Should().BeEmpty();
        empty.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task AllItems_ArriveOnce_EachSourceInItsOwnOrder_EachDisposedOnce(SourceMode mode)
    {
        var sources = Enumerable.Range(0, 5).Select(s => Sources.From(Enumerable.Range(s * 100, 20 + s), mode)).ToArray();
        List<int> merged = await AsyncIter.Merge(sources).ToListAsync().AsTask().WaitAsync(TestWork.Bound);

        merged.Should().BeEquivalentTo(sources.SelectMany((_, s) => Enumerable.Range(s * 100, 20 + s)));
        for (int s = 0; s < 5; s++)
        {
            merged.Where(x => x / 100 == s).Should().Equal(Enumerable.Range(s * 100, 20 + s));
            sources[s].Disposals.Should().Be(1);
        }
    }

    [Fact]
    public async Task SynchronousSources_AreServedRoundRobin_NoneStarves()
    {
        // doc: asynciter-merge
        var a = Sources.From(Enumerable.Range(0, 1_000));
        var b = Sources.From(Enumerable.Range(1_000, 1_000));
        var first = new List<int>();
        await foreach (int x in AsyncIter.Merge(a, b))
        {
            first.Add(x);
            if (first.Count == 10)
            {
                break;
            }
        }

        first.Should().Equal(0, 1_000, 1, 1_001, 2, 1_002, 3, 1_003, 4, 1_004);
        // end doc
        a.Disposals.Should().Be(1);
        b.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task FastSynchronousSource_DoesNotStarveAnAsynchronousOne()
    {
        // The fast source is always ready. Each item of the slow one becomes ready when the loop opens its gate (after
        // fast items 99, 199, ...): the source resumes inline, so its item is ready before the merge's next turn, and a
        // fair merge serves it at that turn instead of the fast source's next item. (On the pool: under the test
        // framework's SynchronizationContext, SetResult would queue the source's continuation instead of running it.)
        var fast = Sources.From(Enumerable.Range(0, 100_000));
        TaskCompletionSource[] gates = [.. Enumerable.Range(0, 5).Select(_ => new TaskCompletionSource())];
        var seen = new List<int>();
        await Task.Run(async () =>
        {
            int opened = 0;
            await foreach (int x in AsyncIter.Merge(fast, Gated(gates)))
            {
                seen.Add(x);
                if (x < 0 && -x == gates.Length)
                {
                    break;
                }

                if (x >= 0 && x % 100 == 99 && opened < gates.Length)
                {
                    gates[opened++].SetResult();
                }
            }
        }).WaitAsync(TestWork.Bound);

        for (int k = 1; k <= gates.Length; k++)
        {
            seen.IndexOf(-k).Should().Be(seen.IndexOf((100 * k) - 1) + 1, $"slow item {k} was ready right after fast item {(100 * k) - 1}");
        }

        fast.Produced.Should().BeLessThan(100_000);
    }

    /// <summary>Yields -1, -2, ...: each once its gate is opened, resuming inline on the thread that opens it.</summary>
    private static async IAsyncEnumerable<int> Gated(TaskCompletionSource[] gates)
    {
        for (int i = 0; i < gates.Length; i++)
        {
            await gates[i].Task.ConfigureAwait(false);
            yield return -(i + 1);
        }
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task MaxConcurrency_LimitsActiveSources_StartsTheRestInOrder(SourceMode mode)
    {
        var probe = new ConcurrencyProbe(max: 2);
        var sequence = new TestWork.LazySequence<IAsyncEnumerable<int>>(
            Enumerable.Range(0, 6).Select(s => TestWork.Tracked(probe, s, Enumerable.Range(s * 10, 3), mode)));

        IAsyncEnumerable<int> merged = AsyncIter.Merge(sequence, 2);
        sequence.Pulled.Should().Be(0);
        List<int> all = await merged.ToListAsync().AsTask().WaitAsync(TestWork.Bound);

        all.Should().BeEquivalentTo(Enumerable.Range(0, 6).SelectMany(s => Enumerable.Range(s * 10, 3)));
        probe.Peak.Should().Be(2);
        probe.StartOrder.Should().Equal(Enumerable.Range(0, 6));
        probe.InFlight.Should().Be(0);
        sequence.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task FirstError_CancelsAndDisposesTheOthers_ThenSurfaces(SourceMode mode)
    {
        var gate = new TaskCompletionSource<bool>();
        var stalled = Sources.From(Enumerable.Range(0, 3), mode);
        var waiting = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var waitingSource = new TrackedEnumerable(TestWork.ThenWait(new[] { 100 }, gate.Task, () => waiting.TrySetResult(true)));
        var failing = Sources.Failing(Enumerable.Range(200, 5), failAt: 2, mode);

        await FluentActions.Awaiting(() => AsyncIter.Merge(stalled, waitingSource, failing).ToListAsync().AsTask().WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<InvalidOperationException>().WithMessage("source failure");

        stalled.Disposals.Should().Be(1);
        failing.Disposals.Should().Be(1);
        waitingSource.Disposals.Should().Be(1);
        waitingSource.LastToken.IsCancellationRequested.Should().BeTrue();
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task EarlyBreak_DisposesEverySourceOnce_IncludingOnesWithAPendingMoveNext(SourceMode mode)
    {
        var gate = new TaskCompletionSource<bool>();
        var waiting = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var pendingSource = new TrackedEnumerable(TestWork.ThenWait(Array.Empty<int>(), gate.Task, () => waiting.TrySetResult(true)));
        var other = Sources.From(Enumerable.Range(0, 100), mode);
        await foreach (int x in AsyncIter.Merge(pendingSource, other))
        {
            await waiting.Task.WaitAsync(TestWork.Bound);
            break;
        }

        pendingSource.Disposals.Should().Be(1);
        other.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Cancellation_FlowsToEverySource(SourceMode mode)
    {
        using var cts = new CancellationTokenSource();
        var a = Sources.From(Enumerable.Range(0, 100), mode);
        var b = Sources.From(Enumerable.Range(100, 100), mode);
        Func<Task> act = async () =>
        {
            await foreach (int x in AsyncIter.Merge(a, b).WithCancellation(cts.Token))
            {
                cts.Cancel();
            }
        };

        await act.Should().ThrowAsync<OperationCanceledException>();
        a.LastToken.IsCancellationRequested.Should().BeTrue();
        a.Disposals.Should().Be(1);
        b.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task NullSourceInLazySequence_FailsTheMerge()
    {
        var a = Sources.From(Enumerable.Range(0, 3));
        await FluentActions.Awaiting(() => AsyncIter.Merge(new IAsyncEnumerable<int>[] { a, null! }.AsEnumerable(), 2).ToListAsync().AsTask())
            .Should().ThrowExactlyAsync<ArgumentNullException>().WithParameterName("sources");
        a.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task SourceFailure_ItemsBeforeItArrive_ThenItSurfaces_NothingElse(SourceMode mode)
    {
        var failing = Sources.Failing(Enumerable.Range(0, 5), failAt: 3, mode);
        List<int> items = await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(AsyncIter.Merge(failing));
        items.Should().Equal(0, 1, 2);
        failing.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task EarlyBreak_DisposesTheSequenceOfSources_EvenWhenNotExhausted()
    {
        var sequence = new TestWork.LazySequence<IAsyncEnumerable<int>>(Enumerable.Range(0, 10).Select(s => (IAsyncEnumerable<int>)Sources.From(Enumerable.Range(s * 100, 5))));
        await foreach (int x in AsyncIter.Merge(sequence, 2))
        {
            break;
        }

        sequence.Pulled.Should().Be(2);
        sequence.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task ConsumerWaitingAgainAndAgain_GetsEachItemWhenItArrives()
    {
        var gates = Enumerable.Range(0, 3).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        await using IAsyncEnumerator<int> e = AsyncIter.Merge(Gated()).GetAsyncEnumerator();
        for (int i = 0; i < 3; i++)
        {
            ValueTask<bool> move = e.MoveNextAsync();
            move.IsCompleted.Should().BeFalse($"item {i} has not arrived");
            gates[i].SetResult();
            (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
            e.Current.Should().Be(i);
        }

        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeFalse();

        async IAsyncEnumerable<int> Gated()
        {
            for (int i = 0; i < 3; i++)
            {
                await gates[i].Task;
                yield return i;
            }
        }
    }

    [Fact]
    public async Task SourceWhoseMoveNextThrowsSynchronously_FailsTheMerge_OthersAreDisposed()
    {
        var thrower = new ScriptedSource(items: 1, moveNextThrows: new FormatException("thrown by MoveNextAsync itself"));
        var other = Sources.From(Enumerable.Range(100, 50), SourceMode.Yielding);
        List<int> items = await OperatorChecks.CollectExpectingFailureAsync<int, FormatException>(AsyncIter.Merge(thrower, other)).WaitAsync(TestWork.Bound);
        items.Should().Contain(0).And.OnlyHaveUniqueItems();
        thrower.Disposals.Should().Be(1);
        other.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task FinishedSourceWhoseDisposeThrows_FailsTheMerge_OthersAreCancelledAndDisposed()
    {
        var faulty = new ScriptedSource(items: 2, disposeThrows: new FormatException("thrown by DisposeAsync"));
        var other = Sources.From(Enumerable.Range(100, 1_000), SourceMode.Yielding);
        await OperatorChecks.CollectExpectingFailureAsync<int, FormatException>(AsyncIter.Merge(faulty, other)).WaitAsync(TestWork.Bound);
        faulty.Disposals.Should().Be(1);
        other.Disposals.Should().Be(1);
        other.Produced.Should().BeLessThan(1_000, "the failure stopped the merge");
    }

    [Fact]
    public async Task FirstFailureWins_OverDisposalFailuresDuringShutdown()
    {
        var failing = Sources.Failing(Enumerable.Range(0, 5), failAt: 1);
        var faultyDispose = new ScriptedSource(items: int.MaxValue, disposeThrows: new FormatException("thrown by DisposeAsync"));
        await OperatorChecks.CollectExpectingFailureAsync<int, InvalidOperationException>(AsyncIter.Merge(SourcesThenThrowOnDispose(), 2)).WaitAsync(TestWork.Bound);
        faultyDispose.Disposals.Should().Be(1);

        IEnumerable<IAsyncEnumerable<int>> SourcesThenThrowOnDispose()
        {
            try
            {
                yield return failing;
                yield return faultyDispose;
            }
            finally
            {
                throw new FormatException("thrown by disposing the sequence of sources");
            }
        }
    }

    /// <summary>A hand-written source: yields 0, 1, ... (<c>items</c> of them), then can throw from MoveNextAsync
    /// synchronously (not through the returned task); DisposeAsync can throw.</summary>
    private sealed class ScriptedSource(int items, Exception? moveNextThrows = null, Exception? disposeThrows = null) : IAsyncEnumerable<int>
    {
        private int _disposals;

        public int Disposals => Volatile.Read(ref _disposals);

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default) =>
            new Enumerator(items, moveNextThrows, disposeThrows, () => Interlocked.Increment(ref _disposals));

        private sealed class Enumerator(int items, Exception? moveNextThrows, Exception? disposeThrows, Action onDispose) : IAsyncEnumerator<int>
        {
            public int Current { get; private set; } = -1;

            public ValueTask<bool> MoveNextAsync()
            {
                if (Current + 1 < items)
                {
                    Current++;
                    return new ValueTask<bool>(true);
                }

                return moveNextThrows is null ? new ValueTask<bool>(false) : throw moveNextThrows;
            }

            public ValueTask DisposeAsync()
            {
                onDispose();
                return disposeThrows is null ? default : throw disposeThrows;
            }
        }
    }

    /// <summary>Wraps any async sequence to count disposals and record its token.</summary>
    private sealed class TrackedEnumerable(IAsyncEnumerable<int> inner) : IAsyncEnumerable<int>
    {
        private int _disposals;

        public int Disposals => Volatile.Read(ref _disposals);

        public CancellationToken LastToken { get; private set; }

        public IAsyncEnumerator<int> GetAsyncEnumerator(CancellationToken cancellationToken = default)
        {
            LastToken = cancellationToken;
            return new Enumerator(this, inner.GetAsyncEnumerator(cancellationToken));
        }

        private sealed class Enumerator(TrackedEnumerable owner, IAsyncEnumerator<int> inner) : IAsyncEnumerator<int>
        {
            public int Current => inner.Current;

            public ValueTask<bool> MoveNextAsync() => inner.MoveNextAsync();

            public ValueTask DisposeAsync()
            {
                Interlocked.Increment(ref owner._disposals);
                return inner.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task AnItemReadyBeforeANullSourceIsReached_IsYieldedBeforeTheFailure()
    {
        var a = Sources.From(Enumerable.Range(0, 3)); // synchronous: its first item is ready as the merge opens it
        var seen = new List<int>();

        await FluentActions.Awaiting(async () =>
        {
            await foreach (int x in AsyncIter.Merge(new IAsyncEnumerable<int>[] { a, null! }.AsEnumerable(), maxConcurrency: 2))
            {
                seen.Add(x);
            }
        }).Should().ThrowAsync<ArgumentNullException>().WithParameterName("sources");

        a.Disposals.Should().Be(1);
        seen.Should().Equal([0], "a's first item was ready before the null source was reached; nothing is asked of a after it");
    }

    [Fact]
    public async Task AnItemReadyBeforeASourceFailsToOpen_IsYieldedBeforeTheFailure()
    {
        var a = Sources.From(Enumerable.Range(0, 3));
        var hostile = new HostileSource(Hostility.GetEnumeratorThrows, new FormatException("cannot open"));

        List<int> seen = await OperatorChecks.CollectExpectingFailureAsync<int, FormatException>(AsyncIter.Merge(a, hostile));

        a.Disposals.Should().Be(1);
        seen.Should().Equal([0], "a's first item was ready before the second source failed to open, as before a source whose first move fails");
    }

    /// <summary>A source that is null or fails to open is the first failure: the sequence of sources failing to dispose
    /// afterwards (its finally throws) does not replace it.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ASourceThatIsNullOrFailsToOpen_IsTheFailure_NotTheSequencesDisposalFailingAfterIt(bool failsToOpen)
    {
        IEnumerable<IAsyncEnumerable<int>> SourcesThenThrowOnDispose()
        {
            try
            {
                yield return Sources.Of(SourceMode.Synchronous, 0);
                yield return failsToOpen ? new HostileSource(Hostility.GetEnumeratorThrows, new InvalidDataException("cannot open")) : null!;
            }
            finally
            {
                throw new FormatException("thrown by disposing the sequence of sources");
            }
        }

        var seen = new List<int>();
        Func<Task> act = async () =>
        {
            await foreach (int x in AsyncIter.Merge(SourcesThenThrowOnDispose(), maxConcurrency: 1))
            {
                seen.Add(x);
            }
        };

        if (failsToOpen)
        {
            await act.Should().ThrowAsync<InvalidDataException>();
        }
        else
        {
            await act.Should().ThrowAsync<ArgumentNullException>().WithParameterName("sources");
        }

        seen.Should().Equal([0]);
    }

    /// <summary>The sequence of sources is disposed at its end, as a <c>foreach</c> would: a failure of that disposal stops
    /// the merge then (a source that runs until cancelled is cancelled), not only once every source has ended.</summary>
    [Fact]
    public async Task TheSequenceOfSourcesFailingToDisposeAtItsEnd_StopsTheMerge()
    {
        var seen = new List<int>();
        Func<Task> act = async () =>
        {
            await foreach (int x in AsyncIter.Merge(new DisposeThrows(RunsUntilCancelled()), maxConcurrency: 2))
            {
                seen.Add(x);
            }
        };

        await act.Should().ThrowAsync<FormatException>().WaitAsync(TestWork.Bound);
        seen.Should().Equal([0]);

        static async IAsyncEnumerable<int> RunsUntilCancelled([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken token = default)
        {
            yield return 0;
            await new TaskCompletionSource().Task.WaitAsync(token); // never ends by itself
        }
    }

    /// <summary>The sequence of sources failing to dispose at its end is not lost when the consumer breaks before the
    /// merge takes that failure: it surfaces from <c>DisposeAsync</c>, as a source's disposal failure does.</summary>
    [Fact]
    public async Task TheSequenceOfSourcesFailingToDisposeAtItsEnd_SurfacesAfterABreak()
    {
        var seen = new List<int>();
        Func<Task> act = async () =>
        {
            await foreach (int x in AsyncIter.Merge(new DisposeThrows(Sources.Of(SourceMode.Synchronous, 0, 1)), maxConcurrency: 2))
            {
                seen.Add(x);
                break;
            }
        };

        await act.Should().ThrowAsync<FormatException>().WaitAsync(TestWork.Bound);
        seen.Should().Equal([0]);
    }

    /// <summary>A hand-written sequence of sources (not an iterator: its Dispose runs only when called), whose
    /// enumerator's Dispose throws, as a reader's that fails to close.</summary>
    private sealed class DisposeThrows(params IAsyncEnumerable<int>[] sources) : IEnumerable<IAsyncEnumerable<int>>
    {
        private int _disposeCalls;

        public int DisposeCalls => Volatile.Read(ref _disposeCalls);

        public IEnumerator<IAsyncEnumerable<int>> GetEnumerator() => new Enumerator(this);

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

        private sealed class Enumerator(DisposeThrows owner) : IEnumerator<IAsyncEnumerable<int>>
        {
            private int _position = -1;

            public IAsyncEnumerable<int> Current => owner.Items[_position];

            object System.Collections.IEnumerator.Current => Current;

            public bool MoveNext() => ++_position < owner.Items.Length;

            public void Reset() => throw new NotSupportedException();

            public void Dispose()
            {
                Interlocked.Increment(ref owner._disposeCalls);
                throw new FormatException("thrown by disposing the sequence of sources");
            }
        }

        private IAsyncEnumerable<int>[] Items => sources;
    }

    /// <summary>The sequence of sources failed to dispose at its end before a source's <c>DisposeAsync</c> failed at
    /// shutdown: the sequence's failure is the first, whether the merge took it or the consumer broke before.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task TheSequencesDisposalFailure_BeforeASourcesDisposalFailure_IsTheFirst_AlsoAfterABreak(bool breakFirst)
    {
        var a = new ScriptedSource(items: 1);
        var b = new ScriptedSource(items: int.MaxValue, disposeThrows: new InvalidDataException("thrown by b's DisposeAsync"));
        var sequence = new DisposeThrows(a, b);
        Func<Task> act = async () =>
        {
            await foreach (int x in AsyncIter.Merge(sequence, maxConcurrency: 2))
            {
                if (breakFirst && sequence.DisposeCalls == 1)
                {
                    break; // the sequence's disposal failed already; the merge has not taken that failure yet
                }
            }
        };

        await act.Should().ThrowExactlyAsync<FormatException>().WaitAsync(TestWork.Bound);
        sequence.DisposeCalls.Should().Be(1);
        b.Disposals.Should().Be(1);
    }

    /// <summary>A consumer that cancels after the sequence of sources failed to dispose and then leaves at the yield gets
    /// nothing; one that asks for more gets the cancellation (the token rule).</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task CancellingAfterTheSequencesDisposalFailed_ThenLeaving_GetsNothing_ElseTheCancellation(bool leaveAtYield)
    {
        var b = new ScriptedSource(items: int.MaxValue);
        var sequence = new DisposeThrows(new ScriptedSource(items: 1), b);
        using var cts = new CancellationTokenSource();
        Func<Task> act = async () =>
        {
            await foreach (int x in AsyncIter.Merge(sequence, maxConcurrency: 2).WithCancellation(cts.Token))
            {
                if (sequence.DisposeCalls == 1)
                {
                    cts.Cancel();
                    if (leaveAtYield)
                    {
                        break;
                    }
                }
            }
        };

        if (leaveAtYield)
        {
            await act.Should().NotThrowAsync().WaitAsync(TestWork.Bound);
        }
        else
        {
            (await act.Should().ThrowExactlyAsync<OperationCanceledException>().WaitAsync(TestWork.Bound)).Which.CancellationToken.Should().Be(cts.Token);
        }

        sequence.DisposeCalls.Should().Be(1);
        b.Disposals.Should().Be(1);
    }
}
