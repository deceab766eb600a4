namespace AsyncIterTools.Tests;

public sealed class AsCompletedTests
{
    private static TaskCompletionSource<T> Gate<T>() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    [Fact]
    public void InvalidArguments_ThrowAtTheCall()
    {
        var work = Array.Empty<Func<CancellationToken, Task<int>>>();
        FluentActions.Invoking(() => AsyncIter.AsCompleted((IEnumerable<Func<CancellationToken, Task<int>>>)null!)).Should().Throw<ArgumentNullException>().WithParameterName("work");
        FluentActions.Invoking(() => AsyncIter.AsCompleted((IEnumerable<Task<int>>)null!)).Should().Throw<ArgumentNullException>().WithParameterName("tasks");
        FluentActions.Invoking(() => AsyncIter.AsCompleted(work, 0)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxConcurrency");
        FluentActions.Invoking(() => AsyncIter.AsCompleted(work, null, TimeSpan.FromSeconds(-2))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
        FluentActions.Invoking(() => AsyncIter.AsCompleted(Array.Empty<Task<int>>(), TimeSpan.FromSeconds(-2))).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("timeout");
        FluentActions.Invoking(() => AsyncIter.AsCompleted(work, null, Timeout.InfiniteTimeSpan)).Should().NotThrow();
    }

    [Fact]
    public async Task Empty_GivesEmpty()
    {
        (await AsyncIter.AsCompleted(Array.Empty<Func<CancellationToken, Task<int>>>()).ToListAsync()).Should().BeEmpty();
        (await AsyncIter.AsCompleted(Array.Empty<Task<int>>()).ToListAsync()).Should().BeEmpty();
    }

    [Fact]
    public async Task Factories_YieldInCompletionOrder()
    {
        var gates = Enumerable.Range(0, 3).Select(_ => Gate<int>()).ToArray();
        var work = gates.Select(g => (Func<CancellationToken, Task<int>>)(_ => g.Task));

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work).GetAsyncEnumerator();
        ValueTask<bool> move = e.MoveNextAsync();
        gates[2].SetResult(2);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(2);

        move = e.MoveNextAsync();
        gates[0].SetResult(0);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);

        gates[1].SetResult(1);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(1);
        (await e.MoveNextAsync()).Should().BeFalse();
    }

    [Fact]
    public async Task Tasks_YieldInCompletionOrder()
    {
        var gates = Enumerable.Range(0, 3).Select(_ => Gate<int>()).ToArray();
        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(gates.Select(g => g.Task)).GetAsyncEnumerator();
        ValueTask<bool> move = e.MoveNextAsync();
        gates[1].SetResult(1);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(1);
        gates[2].SetResult(2);
        gates[0].SetResult(0);
        (await e.MoveNextAsync()).Should().BeTrue();
        (await e.MoveNextAsync()).Should().BeTrue();
        (await e.MoveNextAsync()).Should().BeFalse();
    }

    [Theory]
    [InlineData(null)]
    [InlineData(2)]
    public async Task AllResults_ArriveOnce(int? max)
    {
        var work = Enumerable.Range(0, 25).Select(i => (Func<CancellationToken, Task<int>>)(async _ =>
        {
            for (int k = 0; k < i % 5; k++)
            {
                await Task.Yield();
            }

            return i;
        }));

        (await AsyncIter.AsCompleted(work, max).ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeEquivalentTo(Enumerable.Range(0, 25));
    }

    [Fact]
    public async Task PeakConcurrency_ReachesButNeverExceedsMax_AndStartsLazilyInInputOrder()
    {
        var probe = new ConcurrencyProbe(max: 3);
        var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(Enumerable.Range(0, 20).Select(i => (Func<CancellationToken, Task<int>>)(ct => probe.RunAsync(i, probe.Held, ct))));

        IAsyncEnumerable<int> results = AsyncIter.AsCompleted(work, 3);
        work.Pulled.Should().Be(0);

        Task<List<int>> all = results.ToListAsync().AsTask();
        await probe.AssertHeldAtMaxThenReleaseAsync();
        (await all.WaitAsync(TestWork.Bound)).Should().BeEquivalentTo(Enumerable.Range(0, 20));
        probe.Peak.Should().Be(3);
        probe.StartOrder.Should().Equal(Enumerable.Range(0, 20));
        work.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task Break_CancelsAndAwaitsRunningWork()
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var work = new TestWork.LazySequence<Func<CancellationToken, Task<int>>>(
            new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(-1) }
                .Concat(Enumerable.Range(0, 3).Select(i => (Func<CancellationToken, Task<int>>)(ct => probe.RunAsync(i, never, ct)))));

        await foreach (int x in AsyncIter.AsCompleted(work, 4))
        {
            x.Should().Be(-1);
            break;
        }

        probe.Started.Should().Be(3);
        probe.Cancelled.Should().Be(3);
        probe.InFlight.Should().Be(0);
        work.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task Failure_SurfacesInCompletionOrder_AndCancelsTheRest()
    {
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var fail = Gate<int>();
        var work = new Func<CancellationToken, Task<int>>[]
        {
            ct => probe.RunAsync(0, never, ct),
            _ => Task.FromResult(1),
            _ => fail.Task,
            ct => probe.RunAsync(3, never, ct),
        };

        var seen = new List<int>();
        Func<Task> act = async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(work))
            {
                seen.Add(x);
                fail.SetException(new FormatException());
            }
        };

        await act.Should().ThrowAsync<FormatException>();
        seen.Should().Equal(1);
        probe.Cancelled.Should().Be(2);
        probe.InFlight.Should().Be(0);
    }

    [Fact]
    public async Task Timeout_IsOneOverallDeadline_CancelsAndAwaitsWork_ThenThrowsTimeoutException()
    {
        var time = new CountingTimeProvider();
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        var second = Gate<int>();
        var work = new Func<CancellationToken, Task<int>>[]
        {
            _ => Task.FromResult(0),
            _ => second.Task,
            ct => probe.RunAsync(2, never, ct),
        };

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work, null, TimeSpan.FromSeconds(10), time).GetAsyncEnumerator();
        (await e.MoveNextAsync()).Should().BeTrue();
        time.Advance(TimeSpan.FromSeconds(6));
        ValueTask<bool> move = e.MoveNextAsync();
        second.SetResult(1);
        (await move.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(1);

        move = e.MoveNextAsync();
        time.Advance(TimeSpan.FromSeconds(4));
        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>();
        probe.Cancelled.Should().Be(1);
        probe.InFlight.Should().Be(0);
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task Deadline_PassingWhileTheConsumerIsBusy_CancelsRunningWorkAtOnce_StartsNothingNew_ThenTimesOut()
    {
        var time = new CountingTimeProvider();
        var probe = new ConcurrencyProbe();
        var never = new TaskCompletionSource<bool>().Task;
        int startedAfterDeadline = 0;
        bool deadlinePassed = false;
        IEnumerable<Func<CancellationToken, Task<int>>> Work()
        {
            yield return _ => Task.FromResult(0);
            yield return ct => probe.RunAsync(1, never, ct);
            for (int i = 2; ; i++)
            {
                int id = i;
                yield return _ =>
                {
                    if (Volatile.Read(ref deadlinePassed))
                    {
                        Interlocked.Increment(ref startedAfterDeadline);
                    }

                    return Task.FromResult(id);
                };
            }
        }

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(Work(), 2, TimeSpan.FromSeconds(10), time).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);

        // The consumer is busy with 0 (not in MoveNextAsync) when the deadline passes; 1 and 2 were started before it.
        Volatile.Write(ref deadlinePassed, true);
        time.Advance(TimeSpan.FromSeconds(10));
        probe.Cancelled.Should().Be(1, "running work is cancelled when the deadline passes, not when the consumer next looks");

        var yielded = new List<int>();
        Func<Task> rest = async () =>
        {
            while (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound))
            {
                yielded.Add(e.Current);
            }
        };
        await rest.Should().ThrowAsync<TimeoutException>();
        yielded.Should().Equal([2], "a result that had completed is still yielded; nothing started after the deadline");
        startedAfterDeadline.Should().Be(0);
        probe.InFlight.Should().Be(0);
    }

    [Fact]
    public async Task Deadline_AValueOfWorkThatIgnoresItsCancellation_ComingAfterTheDeadline_IsNotYielded()
    {
        var time = new CountingTimeProvider();
        var late = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Func<CancellationToken, Task<int>>[] work =
        [
            ct =>
            {
                ct.Register(cancelled.SetResult);
                return late.Task; // ignores its token
            },
        ];
        var yielded = new List<int>();
        async Task ConsumeAsync()
        {
            await foreach (int x in AsyncIter.AsCompleted(work, null, TimeSpan.FromSeconds(10), time))
            {
                yielded.Add(x);
            }
        }

        Task all = ConsumeAsync();
        time.Advance(TimeSpan.FromSeconds(10));
        await cancelled.Task.WaitAsync(TestWork.Bound); // the deadline cancelled the work, which goes on
        all.IsCompleted.Should().BeFalse("owned work is awaited");
        late.SetResult(7);

        await FluentActions.Awaiting(() => all.WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>();
        yielded.Should().BeEmpty("the value came after the deadline");
    }

    [Fact]
    public async Task Deadline_WorkThatFailsItsOwnWayWhenCancelled_IsReportedAsTheTimeout()
    {
        var time = new CountingTimeProvider();
        var givenUp = new TaskCompletionSource<int>(); // its failure is queued inside the deadline's cancellation
        var work = new Func<CancellationToken, Task<int>>[]
        {
            _ => Task.FromResult(0),
            ct =>
            {
                ct.Register(() => givenUp.SetException(new InvalidOperationException("gave up")));
                return givenUp.Task;
            },
        };

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work, null, TimeSpan.FromSeconds(10), time).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        TestWork.CompleteInline(() => time.Advance(TimeSpan.FromSeconds(10))); // while the consumer is busy with 0
        givenUp.Task.IsFaulted.Should().BeTrue();

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>();
    }

    [Fact]
    public async Task Deadline_WorkThatFailedOnItsOwnBeforeIt_SurfacesItsFailure_EvenWhenReachedAfter()
    {
        var time = new CountingTimeProvider();
        var failing = new TaskCompletionSource<int>(); // its failure is queued where it is set
        var work = new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(0), _ => failing.Task };

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work, null, TimeSpan.FromSeconds(10), time).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        time.Advance(TimeSpan.FromSeconds(5));
        TestWork.CompleteInline(() => failing.SetException(new FormatException("failed on its own"))); // while the consumer is busy with 0
        TestWork.CompleteInline(() => time.Advance(TimeSpan.FromSeconds(5)));                          // the deadline passes before it asks again

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<FormatException>("the failure came before the deadline: it is not the deadline's doing");
    }

    [Fact]
    public async Task TasksOverload_TimeoutZero_ATaskThatHadFailed_SurfacesItsFailure_NotATimeout()
    {
        Task<int>[] tasks = [Task.FromResult(1), Task.FromException<int>(new FormatException("had failed"))];
        var seen = new List<int>();

        Func<Task> enumerate = async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(tasks, TimeSpan.Zero))
            {
                seen.Add(x);
            }
        };

        await enumerate.Should().ThrowAsync<FormatException>("the operator never cancelled that task: its failure is its own");
        seen.Should().Equal(1);
    }

    [Fact]
    public async Task NullWorkElement_ReachedWhileWorkRuns_NothingIsYieldedAfterIt_ThenItsFailure()
    {
        var gate = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        CancellationToken pieceToken = default;
        var work = new Func<CancellationToken, Task<int>>?[]
        {
            ct =>
            {
                pieceToken = ct;
                return gate.Task; // completes after the operator reached the null and cancelled it
            },
            null,
        };

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work!).GetAsyncEnumerator();
        Task<bool> move = e.MoveNextAsync().AsTask();
        pieceToken.IsCancellationRequested.Should().BeTrue("reaching the null element fails the operator, which cancels the running work");
        gate.SetResult(5);

        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<ArgumentNullException>("the failure was reached first: the piece it cancelled is not yielded before it")
            .WithParameterName("work");
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
                return TestWork.FailsWhenCancelled(cts.Token);
            },
        };

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work).GetAsyncEnumerator(cts.Token);
        Task<bool> move = e.MoveNextAsync().AsTask();
        await started.Task.WaitAsync(TestWork.Bound);
        TestWork.CompleteInline(cts.Cancel);

        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<OperationCanceledException>("the piece failed after the token was cancelled, because of it");
    }

    [Fact]
    public async Task TimeoutZero_OverWork_StartsNothing_AndTimesOut()
    {
        int started = 0;
        var work = Enumerable.Range(0, 3).Select(i => (Func<CancellationToken, Task<int>>)(_ =>
        {
            Interlocked.Increment(ref started);
            return Task.FromResult(i);
        }));

        await FluentActions.Awaiting(() => AsyncIter.AsCompleted(work, null, TimeSpan.Zero).ToListAsync().AsTask().WaitAsync(TestWork.Bound))
            .Should().ThrowAsync<TimeoutException>();
        started.Should().Be(0, "the deadline has passed before the first piece could start");
    }

    [Fact]
    public async Task TasksOverload_AFailedTask_AllTasksAreStillReadOnTheFirstMoveNext()
    {
        // The operator starts nothing: it watches the tasks it is given, all of them, so that it observes the failures of
        // those it never reaches.
        var later = Gate<int>();
        var tasks = new TestWork.LazySequence<Task<int>>([Task.FromException<int>(new FormatException()), later.Task, Task.FromResult(3)]);
        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(tasks).GetAsyncEnumerator();

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<FormatException>();
        tasks.Pulled.Should().Be(3);
        tasks.Disposals.Should().Be(1);
        later.SetResult(2);
    }

    [Fact]
    public async Task FailuresOfWorkLeftBehindByABreak_AreObserved_NoUnobservedTaskException()
    {
        int failed = 0;
        (await UnobservedFailuresAfterAsync(async () => failed = await BreakWhileWorkFailsAsync()))
            .Should().BeEmpty("work that failed after the consumer left is observed by the operator");
        failed.Should().Be(2);
    }

    [Fact]
    public async Task TasksOverload_CancelledBeforeTheFirstMove_YieldsNothing_AndObservesEveryTasksFailure()
    {
        (await UnobservedFailuresAfterAsync(CancelBeforeTheFirstMoveAsync))
            .Should().BeEmpty("the tasks given to AsCompleted are read, and their failures observed, also when its token was cancelled already");
    }

    [Fact]
    public async Task TasksOverload_AClockThatCannotArmTheDeadline_StillObservesEveryTasksFailure()
    {
        (await UnobservedFailuresAfterAsync(ClockFailsAtTheFirstMoveAsync))
            .Should().BeEmpty("the tasks given to AsCompleted have their failures observed however the enumeration ends");
    }

    [Fact]
    public async Task TasksOverload_ANullElement_StillObservesTheFailuresOfTheTasksAfterIt()
    {
        (await UnobservedFailuresAfterAsync(ReachANullTaskAsync))
            .Should().BeEmpty("the tasks after a null element are still read, and their failures observed");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task ReachANullTaskAsync()
    {
        Task<int>?[] tasks = [Task.FromResult(1), null, Task.FromException<int>(new AbandonedWorkFailure())];
        await FluentActions.Awaiting(async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(tasks!))
            {
            }
        }).Should().ThrowAsync<ArgumentNullException>().WithParameterName("tasks");
    }

    /// <summary>The sequence of work never sees the token the deadline cancels: its failure is never the timeout, also
    /// when the deadline passes while it is read.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AFailureOfTheSequenceOfWork_ReadAsTheDeadlinePasses_IsThrownAsItself(bool nullElement)
    {
        var time = new FakeTimeProvider();
        IEnumerable<Func<CancellationToken, Task<int>>> Work()
        {
            yield return _ => Task.FromResult(1);
            time.Advance(TimeSpan.FromSeconds(11)); // the deadline passes while the sequence is read
            if (!nullElement)
            {
                throw new FormatException("the sequence of work failed");
            }

            yield return null!;
        }

        var seen = new List<int>();
        Func<Task> act = async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(Work(), null, TimeSpan.FromSeconds(10), time))
            {
                seen.Add(x);
            }
        };

        if (nullElement)
        {
            await act.Should().ThrowAsync<ArgumentNullException>().WithParameterName("work");
        }
        else
        {
            await act.Should().ThrowAsync<FormatException>();
        }

        seen.Should().Equal([1], "the first piece completed before the deadline and before the failure");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task ClockFailsAtTheFirstMoveAsync()
    {
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        Task<int>[] tasks = [Task.FromException<int>(new AbandonedWorkFailure()), Task.FromException<int>(new AbandonedWorkFailure())];
        await FluentActions.Awaiting(async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(tasks, TimeSpan.FromSeconds(10), time))
            {
            }
        }).Should().ThrowAsync<InvalidOperationException>().WithMessage("The clock cannot create a timer.");
    }

    /// <summary>The token rule: once cancelled, the enumeration ends as the cancellation, also when the clock cannot arm
    /// the deadline (for given tasks, which are still read, as for work).</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task CancelledBeforeTheFirstMove_WithAClockThatCannotArmTheDeadline_EndsAsTheCancellation(bool givenTasks)
    {
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        var time = new MisbehavingTimeProvider { CreateTimerThrows = true };
        IAsyncEnumerable<int> sequence = givenTasks
            ? AsyncIter.AsCompleted([Task.FromResult(1), Task.FromResult(2)], TimeSpan.FromSeconds(10), time)
            : AsyncIter.AsCompleted([_ => Task.FromResult(1)], null, TimeSpan.FromSeconds(10), time);

        Func<Task> act = async () =>
        {
            await foreach (int x in sequence.WithCancellation(cts.Token))
            {
            }
        };

        (await act.Should().ThrowAsync<OperationCanceledException>()).Which.CancellationToken.Should().Be(cts.Token);
    }

    [Fact]
    public async Task TasksOverload_ATaskThatFailsAfterTheConsumerLeft_IsObserved()
    {
        (await UnobservedFailuresAfterAsync(BreakThenFailTheTaskLeftAsync))
            .Should().BeEmpty("a given task the operator stopped waiting for has its failure observed when it comes");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task BreakThenFailTheTaskLeftAsync()
    {
        var left = new TaskCompletionSource<int>();
        await foreach (int x in AsyncIter.AsCompleted([Task.FromResult(1), left.Task]))
        {
            break;
        }

        left.SetException(new AbandonedWorkFailure());
    }

    /// <summary>A task that outlives many enumerations (a host's stopping task, a cached one): each enumeration that ended
    /// early lets go of everything it had, also while that task runs on (as <c>Task.WhenAny</c> removes its continuations
    /// from the tasks that lost). The caller's token source stands for the enumeration's state, which holds its token; an
    /// <c>AsyncLocal</c> value for the enumerating flow's ExecutionContext.</summary>
    [Theory]
    [InlineData("break")]
    [InlineData("timeout")]
    [InlineData("cancel")]
    [InlineData("failure")]
    public async Task TasksOverload_EndedEarly_LeavesNothingOfItselfOnATaskStillRunning(string howItEnds)
    {
        var stillRunning = new TaskCompletionSource<int>();
        var ended = new List<WeakReference>();
        for (int i = 0; i < 50; i++)
        {
            ended.AddRange(await EnumerateOnceAsync(howItEnds, stillRunning.Task));
        }

        var bound = System.Diagnostics.Stopwatch.StartNew();
        do
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            await Task.Yield();
        }
        while (ended.Any(e => e.IsAlive) && bound.Elapsed < TimeSpan.FromSeconds(10));

        ended.Count(e => e.IsAlive).Should().Be(0, "an enumeration that ended keeps nothing attached to a task it no longer waits for");
        GC.KeepAlive(stillRunning);
    }

    private static readonly AsyncLocal<object?> s_flowState = new();

    /// <summary>One enumeration ended early (as <paramref name="howItEnds"/> says) while <paramref name="stillRunning"/>
    /// runs; returns weak references to the token source it was enumerated with and to its flow's AsyncLocal value.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task<WeakReference[]> EnumerateOnceAsync(string howItEnds, Task<int> stillRunning)
    {
        WeakReference? flowState = null;
        var cts = new CancellationTokenSource();
        IAsyncEnumerable<int> results = howItEnds switch
        {
            "break" => AsyncIter.AsCompleted([Task.FromResult(1), stillRunning]),
            "timeout" => AsyncIter.AsCompleted([stillRunning], TimeSpan.Zero),
            "cancel" => AsyncIter.AsCompleted([stillRunning]),
            _ => AsyncIter.AsCompleted([Task.FromException<int>(new FormatException()), stillRunning]),
        };
        Task enumerate = Task.Run(async () =>
        {
            object state = new object();
            flowState = new WeakReference(state);
            s_flowState.Value = state;
            await foreach (int x in results.WithCancellation(cts.Token))
            {
                break;
            }
        });
        if (howItEnds == "cancel")
        {
            await cts.CancelAsync();
        }

        Exception? error = await Record.ExceptionAsync(() => enumerate.WaitAsync(TestWork.Bound));
        (error?.GetType()).Should().Be(howItEnds switch
        {
            "timeout" => typeof(TimeoutException),
            "cancel" => typeof(OperationCanceledException),
            "failure" => typeof(FormatException),
            _ => null,
        });
        cts.Dispose();
        return [new WeakReference(cts), flowState!];
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task CancelBeforeTheFirstMoveAsync()
    {
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        Task<int>[] tasks = [Task.FromException<int>(new AbandonedWorkFailure()), Task.FromException<int>(new AbandonedWorkFailure())];
        var seen = new List<int>();
        await FluentActions.Awaiting(async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(tasks).WithCancellation(cts.Token))
            {
                seen.Add(x);
            }
        }).Should().ThrowAsync<OperationCanceledException>();
        seen.Should().BeEmpty();
    }

    private static Task<List<Exception>> UnobservedFailuresAfterAsync(Func<Task> run) =>
        UnobservedFailures.AfterAsync<AbandonedWorkFailure>(run);

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task<int> BreakWhileWorkFailsAsync()
    {
        int failed = 0;
        var work = new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(0), FailWhenCancelledAsync, FailWhenCancelledAsync };
        await foreach (int x in AsyncIter.AsCompleted(work))
        {
            break; // the other two are cancelled, fail, and are awaited, but nobody reads their results
        }

        return Volatile.Read(ref failed);

        async Task<int> FailWhenCancelledAsync(CancellationToken ct)
        {
            await new TaskCompletionSource().Task.WaitAsync(ct).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            Interlocked.Increment(ref failed);
            throw new AbandonedWorkFailure();
        }
    }

    private sealed class AbandonedWorkFailure : Exception;

    [Fact]
    public async Task TasksOverload_TimeoutRunsOnTheGivenTimeProvider()
    {
        var time = new CountingTimeProvider();
        var pending = Gate<int>();
        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(new[] { Task.FromResult(1), pending.Task }, TimeSpan.FromMinutes(10), time).GetAsyncEnumerator();
        (await e.MoveNextAsync()).Should().BeTrue();
        ValueTask<bool> move = e.MoveNextAsync();
        time.Advance(TimeSpan.FromMinutes(9));
        move.IsCompleted.Should().BeFalse("the deadline is on the given clock, which has not reached it");
        time.Advance(TimeSpan.FromMinutes(1));
        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>().WithMessage("AsCompleted did not complete within*");
        time.ActiveTimers.Should().Be(0);
        pending.SetResult(2);
    }

    [Fact]
    public async Task TimeoutZero_YieldsWhatIsAlreadyDone_ThenTimesOut()
    {
        var pending = Gate<int>();
        var tasks = new[] { Task.FromResult(1), pending.Task };
        var seen = new List<int>();
        Func<Task> act = async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(tasks, TimeSpan.Zero))
            {
                seen.Add(x);
            }
        };

        await act.Should().ThrowAsync<TimeoutException>();
        seen.Should().Equal(1);
    }

    [Fact]
    public async Task TasksOverload_TimeoutZero_NoTasks_EndsWithoutATimeout()
    {
        (await AsyncIter.AsCompleted(Array.Empty<Task<int>>(), TimeSpan.Zero).ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeEmpty();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(null)]
    public async Task Deadline_PassingBeforeTheLastResultWasHandedOut_ThrowsTimeoutAfterIt_WhateverMaxConcurrency(int? maxConcurrency)
    {
        var time = new CountingTimeProvider();
        var work = new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(1), _ => Task.FromResult(2) };
        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work, maxConcurrency, TimeSpan.FromSeconds(10), time).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        time.Advance(TimeSpan.FromSeconds(10)); // while the consumer is busy with the first result
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue("the second result completed before the deadline");

        await FluentActions.Awaiting(() => e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>();
    }

    [Fact]
    public async Task Deadline_PassingWhileWorkRuns_ThrowsTimeout_EvenWhenThatWorkThenSucceeds()
    {
        var time = new CountingTimeProvider();
        var slow = new TaskCompletionSource<int>(); // continuations inline: its completion is posted before SetResult returns
        var work = new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(1), _ => slow.Task }; // ignores its token
        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work, null, TimeSpan.FromSeconds(10), time).GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();

        time.Advance(TimeSpan.FromSeconds(10));
        TestWork.CompleteInline(() => slow.SetResult(2)); // succeeds after the deadline, before the consumer asks again

        var seen = new List<int>();
        await FluentActions.Awaiting(async () =>
        {
            while (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound))
            {
                seen.Add(e.Current);
            }
        }).Should().ThrowAsync<TimeoutException>();
        seen.Should().BeSubsetOf([2]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TasksOverload_CancelledBeforeTheFirstMove_EndsAsTheCancellation_AlsoWhenReadingTheTasksFails(bool nullElement)
    {
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        IEnumerable<Task<int>> tasks = nullElement ? TaskThenNull() : TaskThenFailure();

        await FluentActions.Awaiting(async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(tasks).WithCancellation(cts.Token))
            {
            }
        }).Should().ThrowAsync<OperationCanceledException>();

        static IEnumerable<Task<int>> TaskThenFailure()
        {
            yield return Task.FromResult(1);
            throw new InvalidDataException("the task sequence failed");
        }

        static IEnumerable<Task<int>> TaskThenNull()
        {
            yield return Task.FromResult(1);
            yield return null!;
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Deadline_PassingAfterTheLastResultWasHandedOut_CutsNothingShort_TheEnumerationEnds(bool overWork)
    {
        var time = new CountingTimeProvider();
        IAsyncEnumerable<int> results = overWork
            ? AsyncIter.AsCompleted(new Func<CancellationToken, Task<int>>[] { _ => Task.FromResult(1), _ => Task.FromResult(2) }, null, TimeSpan.FromSeconds(10), time)
            : AsyncIter.AsCompleted([Task.FromResult(1), Task.FromResult(2)], TimeSpan.FromSeconds(10), time);
        await using IAsyncEnumerator<int> e = results.GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();

        time.Advance(TimeSpan.FromSeconds(10)); // while the consumer is busy with the last result
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeFalse("every result was handed out before the deadline");
    }

    [Fact]
    public async Task Cancellation_CancelsWork_AndThrowsOperationCanceled()
    {
        var probe = new ConcurrencyProbe(max: 2);
        var never = new TaskCompletionSource<bool>().Task;
        using var cts = new CancellationTokenSource();
        var work = Enumerable.Range(0, 2).Select(i => (Func<CancellationToken, Task<int>>)(ct => probe.RunAsync(i, never, ct)));

        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work).GetAsyncEnumerator(cts.Token);
        ValueTask<bool> move = e.MoveNextAsync();
        await probe.ReachedMax.WaitAsync(TestWork.Bound);
        cts.Cancel();

        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        probe.Cancelled.Should().Be(2);
        probe.InFlight.Should().Be(0);
    }

    [Fact]
    public async Task TasksOverload_Cancellation_StopsWaitingForTasksItDoesNotOwn()
    {
        var pending = Gate<int>();
        using var cts = new CancellationTokenSource();
        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(new[] { pending.Task }).GetAsyncEnumerator(cts.Token);
        ValueTask<bool> move = e.MoveNextAsync();
        cts.Cancel();
        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        pending.SetResult(1);
    }

    [Fact]
    public async Task AWorkSequenceWhoseDisposalThrows_DoesNotHideTheFirstFailure()
    {
        var failure = new FormatException("the piece's failure");
        Func<Task> read = async () =>
        {
            await foreach (int _ in AsyncIter.AsCompleted(Sources.DisposingWithFailure(failure, new ArithmeticException("the sequence's disposal")), maxConcurrency: 1))
            {
            }
        };
        (await read.Should().ThrowAsync<Exception>()).Which.Should().BeSameAs(failure);
    }

    /// <summary>
    /// docs/asynciter.md, Shared rules: a sequence whose disposal throws makes the enumeration throw that exception from
    /// <c>MoveNextAsync</c> at the end, as a hand-written loop over it would (a hand-written enumerator, whose
    /// <c>MoveNext</c> has returned false; an iterator's <c>finally</c> would throw from <c>MoveNext</c> instead).
    /// </summary>
    [Fact]
    public async Task AWorkEnumeratorThatFailsToDisposeAfterItsEnd_ThrowsThatFromTheLastMoveNext()
    {
        var disposal = new ArithmeticException("the enumerator's disposal");
        var work = new EnumeratorDisposingWithFailure(disposal, _ => Task.FromResult(1), _ => Task.FromResult(2));
        var seen = new List<int>();
        Func<Task> read = async () =>
        {
            await foreach (int value in AsyncIter.AsCompleted(work, maxConcurrency: 1))
            {
                seen.Add(value);
            }
        };
        (await FluentActions.Awaiting(() => read().WaitAsync(TestWork.Bound)).Should().ThrowAsync<ArithmeticException>()).Which.Should().BeSameAs(disposal);
        seen.Should().Equal(1, 2);
        work.Disposals.Should().Be(1);
    }

    /// <summary>
    /// docs/asynciter.md, Shared rules: the first failure is surfaced instead of the sequence's disposal failure, also
    /// when results were yielded before it (the consumer was at a yield before, not when the failure is reached).
    /// </summary>
    [Fact]
    public async Task AWorkSequenceWhoseDisposalThrows_DoesNotHideAFailureThatCameAfterAYieldedResult()
    {
        var failure = new FormatException("the second piece's failure");
        var disposal = new ArithmeticException("the sequence's disposal");
        IEnumerable<Func<CancellationToken, Task<int>>> Work()
        {
            try
            {
                yield return _ => Task.FromResult(1);
                yield return _ => Task.FromException<int>(failure);
            }
            finally
            {
                throw disposal;
            }
        }

        var seen = new List<int>();
        Func<Task> read = async () =>
        {
            await foreach (int value in AsyncIter.AsCompleted(Work(), maxConcurrency: 1))
            {
                seen.Add(value);
            }
        };
        (await FluentActions.Awaiting(() => read().WaitAsync(TestWork.Bound)).Should().ThrowAsync<Exception>()).Which.Should().BeSameAs(failure);
        seen.Should().Equal(1);
    }

    [Fact]
    public async Task AWorkSequenceWhoseDisposalThrows_AfterABreak_ThrowsFromDisposeAsync()
    {
        var disposal = new ArithmeticException("the sequence's disposal");
        IAsyncEnumerator<int> e = AsyncIter.AsCompleted(Sources.DisposingWithFailure(null, disposal), maxConcurrency: 1).GetAsyncEnumerator();
        (await e.MoveNextAsync()).Should().BeTrue();
        e.Current.Should().Be(1);
        (await FluentActions.Awaiting(() => e.DisposeAsync().AsTask()).Should().ThrowAsync<ArithmeticException>()).Which.Should().BeSameAs(disposal);
    }

    [Fact]
    public async Task AWorkSequenceWhoseDisposalThrows_DoesNotHideTheTimeout()
    {
        var time = new CountingTimeProvider();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var work = Sources.RunningUntilCancelled_DisposingWithFailure(started, new ArithmeticException("the sequence's disposal"));
        await using IAsyncEnumerator<int> e = AsyncIter.AsCompleted(work, 1, TimeSpan.FromSeconds(10), time).GetAsyncEnumerator();
        ValueTask<bool> move = e.MoveNextAsync();
        await started.Task.WaitAsync(TestWork.Bound);
        time.Advance(TimeSpan.FromSeconds(10));
        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>();
    }

    /// <summary>
    /// docs/asynciter.md, AsCompleted: when the deadline passes, results that completed before it are still yielded, not
    /// a value that came after it: from work that ignores its token, or from a given task (let go of at the deadline).
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AValueThatCameAfterTheDeadline_IsNotYielded(bool givenTasks)
    {
        var time = new CountingTimeProvider();
        var late = new TaskCompletionSource<int>();
        IAsyncEnumerable<int> sequence = givenTasks
            ? AsyncIter.AsCompleted([Task.FromResult(1), late.Task], TimeSpan.FromSeconds(10), time)
            : AsyncIter.AsCompleted([_ => Task.FromResult(1), _ => late.Task], null, TimeSpan.FromSeconds(10), time);
        await using IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator();
        (await e.MoveNextAsync()).Should().BeTrue();
        e.Current.Should().Be(1);

        time.Advance(TimeSpan.FromSeconds(11)); // the deadline passes while the consumer holds 1
        TestWork.CompleteInline(() => late.SetResult(2)); // after the deadline; its end is posted before this returns

        var yielded = new List<int>();
        async Task RestAsync()
        {
            while (await e.MoveNextAsync())
            {
                yielded.Add(e.Current);
            }
        }

        await FluentActions.Awaiting(() => RestAsync().WaitAsync(TestWork.Bound)).Should().ThrowAsync<TimeoutException>();
        yielded.Should().BeEmpty("2 came after the deadline");
    }

    [Fact]
    public async Task AResultThatCompletedBeforeANullWorkElementIsReached_IsYieldedBeforeTheFailure()
    {
        var work = new Func<CancellationToken, Task<int>>?[] { _ => Task.FromResult(1), null };
        var seen = new List<int>();

        await FluentActions.Awaiting(async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(work!))
            {
                seen.Add(x);
            }
        }).Should().ThrowAsync<ArgumentNullException>().WithParameterName("work");

        seen.Should().Equal([1], "the first piece had completed before the null element was reached: it comes first in completion order");
    }

    [Fact]
    public async Task AResultThatCompletedBeforeTheSequenceOfWorkFails_IsYieldedBeforeTheFailure()
    {
        static IEnumerable<Func<CancellationToken, Task<int>>> Work()
        {
            yield return _ => Task.FromResult(1);
            throw new FormatException("the sequence of work failed");
        }

        var seen = new List<int>();
        await FluentActions.Awaiting(async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(Work()))
            {
                seen.Add(x);
            }
        }).Should().ThrowAsync<FormatException>();

        seen.Should().Equal([1], "the first piece had completed before the sequence of work failed");
    }

    /// <summary>Given tasks made by a selector that throws for one element: the sequence failed, and is not read on after
    /// it (reading on would run the selector again, starting tasks after the failure).</summary>
    [Fact]
    public async Task TasksOverload_ASequenceThatFails_IsNotReadOnAfterItsFailure()
    {
        var created = new List<int>();
        IEnumerable<Task<int>> tasks = Enumerable.Range(0, 3).Select(i =>
        {
            if (i == 1)
            {
                throw new FormatException("the sequence of tasks failed");
            }

            created.Add(i);
            return Task.FromResult(i);
        });

        await FluentActions.Awaiting(async () =>
        {
            await foreach (int x in AsyncIter.AsCompleted(tasks))
            {
            }
        }).Should().ThrowAsync<FormatException>();
        created.Should().Equal([0]);
    }
}
