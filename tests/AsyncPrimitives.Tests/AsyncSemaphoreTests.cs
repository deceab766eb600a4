using AsyncPrimitives.Internal;
using AsyncPrimitives.Tests.Support;

namespace AsyncPrimitives.Tests;

/// <summary>
/// AsyncSemaphore: the lock contract (<see cref="LockContractTests{TGate, TReleaser}"/>, run on a semaphore of one),
/// plus what only counted permits have, from Toro's test_semaphore.py (Semaphore and BoundedSemaphore), tornado's
/// SemaphoreTest/BoundedSemaphoreTest and CPython's asyncio SemaphoreTests: counts, releases of several permits,
/// the bound, and races with more than one permit.
/// </summary>
public sealed class AsyncSemaphoreTests : LockContractTests<AsyncSemaphore, AsyncSemaphore.Releaser>
{
    /// <summary>True on a thread while it is inside <see cref="AsyncSemaphore.Release(int)"/>.</summary>
    [ThreadStatic]
    private static bool t_insideRelease;

    protected override AsyncSemaphore Create(TimeProvider? timeProvider = null) => new(1, 1, timeProvider);

    protected override ValueTask<AsyncSemaphore.Releaser> AcquireAsync(AsyncSemaphore gate, CancellationToken cancellationToken = default) =>
        gate.AcquireAsync(cancellationToken);

    protected override ValueTask<AsyncSemaphore.Releaser> AcquireAsync(AsyncSemaphore gate, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        gate.AcquireAsync(timeout, cancellationToken);

    protected override bool TryAcquire(AsyncSemaphore gate) => gate.TryAcquire();

    protected override void Release(AsyncSemaphore gate) => gate.Release();

    protected override bool IsHeld(AsyncSemaphore gate) => gate.CurrentCount == 0;

    private protected override WaitLines Lines(AsyncSemaphore gate) => gate.Lines;

    // ---- construction ----

    [Theory]
    [InlineData(-1, 1, "initialCount")]
    [InlineData(int.MinValue, int.MaxValue, "initialCount")]
    [InlineData(2, 1, "initialCount")]
    [InlineData(int.MaxValue, int.MaxValue - 1, "initialCount")]
    [InlineData(0, 0, "maxCount")]
    [InlineData(0, -1, "maxCount")]
    [InlineData(-1, 0, "maxCount")]
    public void Constructor_InvalidCounts_ThrowsArgumentOutOfRangeWithTheParameterName(int initialCount, int maxCount, string paramName)
    {
        FluentActions.Invoking(() => new AsyncSemaphore(initialCount, maxCount))
            .Should().Throw<ArgumentOutOfRangeException>().WithParameterName(paramName);
    }

    [Fact]
    public void Constructor_NegativeInitialCountWithDefaultMax_ThrowsForInitialCount()
    {
        FluentActions.Invoking(() => new AsyncSemaphore(-1)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("initialCount");
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 1)]
    [InlineData(3, 5)]
    [InlineData(int.MaxValue, int.MaxValue)]
    public void Constructor_ValidCounts_SetsCurrentAndMaxCount(int initialCount, int maxCount)
    {
        var semaphore = new AsyncSemaphore(initialCount, maxCount);

        semaphore.CurrentCount.Should().Be(initialCount);
        semaphore.MaxCount.Should().Be(maxCount);
        semaphore.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public void Constructor_DefaultMaxCount_IsUnbounded()
    {
        new AsyncSemaphore(2).MaxCount.Should().Be(int.MaxValue);
    }

    [Fact]
    public void AcquireAsync_InitialCountZero_Waits()
    {
        // asyncio test_initial_value_zero
        var semaphore = new AsyncSemaphore(0);

        semaphore.TryAcquire().Should().BeFalse();
        semaphore.AcquireAsync().IsCompleted.Should().BeFalse();
        semaphore.Lines.Waiting.Should().Be(1);
    }

    // ---- acquire and release ----

    [Fact]
    public void AcquireAsync_WhilePermitsRemain_CompletesSynchronouslyAndCountsDown()
    {
        var semaphore = new AsyncSemaphore(3);

        for (int expected = 2; expected >= 0; expected--)
        {
            ValueTask<AsyncSemaphore.Releaser> acquire = semaphore.AcquireAsync();
            acquire.IsCompletedSuccessfully.Should().BeTrue();
            semaphore.CurrentCount.Should().Be(expected);
        }

        semaphore.AcquireAsync().IsCompleted.Should().BeFalse("no permit is left");
        semaphore.CurrentCount.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_ContendersTakingThePermitTwice_QueueTheirSecondRoundsBehindTheFirst()
    {
        // asyncio test_acquire_fifo_order: each contender takes the permit twice; the second round queues behind the first.
        var semaphore = new AsyncSemaphore(0);
        var order = new List<string>();
        async Task Contend(string tag)
        {
            for (int round = 1; round <= 2; round++)
            {
                using (await semaphore.AcquireAsync().ConfigureAwait(false))
                {
                    lock (order)
                    {
                        order.Add($"{tag}_{round}");
                    }

                    await Task.Yield();
                }
            }
        }

        Task[] contenders = new[] { "c1", "c2", "c3" }.Select(Contend).ToArray();
        semaphore.Lines.Waiting.Should().Be(3);
        semaphore.Release();
        await Task.WhenAll(contenders).WaitAsync(Bound);

        order.Should().Equal("c1_1", "c2_1", "c3_1", "c1_2", "c2_2", "c3_2");
        semaphore.CurrentCount.Should().Be(1);
    }

    [Fact]
    public async Task Release_Many_WakesThatManyWaitersInOrder()
    {
        var semaphore = new AsyncSemaphore(0);
        var waiters = Enumerable.Range(0, 5).Select(_ => semaphore.AcquireAsync()).ToArray();

        semaphore.Release(3);

        waiters.Select(w => w.IsCompletedSuccessfully).Should().Equal(true, true, true, false, false);
        semaphore.CurrentCount.Should().Be(0);
        semaphore.Lines.Waiting.Should().Be(2);

        semaphore.Release(4);

        waiters.Skip(3).Should().OnlyContain(w => w.IsCompletedSuccessfully);
        semaphore.CurrentCount.Should().Be(2, "what no waiter needed stays in the count");
        semaphore.Lines.Waiting.Should().Be(0);
        foreach (ValueTask<AsyncSemaphore.Releaser> waiter in waiters)
        {
            (await Within(waiter)).Dispose();
        }

        semaphore.CurrentCount.Should().Be(7);
    }

    [Fact]
    public async Task Release_FromAHolderThatReacquires_GoesBehindTheQueue()
    {
        // asyncio test_acquire_fifo_order_2: a holder that releases and re-acquires queues behind earlier waiters.
        var semaphore = new AsyncSemaphore(0);
        ValueTask<AsyncSemaphore.Releaser> first = semaphore.AcquireAsync();
        ValueTask<AsyncSemaphore.Releaser> second = semaphore.AcquireAsync();
        ValueTask<AsyncSemaphore.Releaser> third = semaphore.AcquireAsync();

        semaphore.Release(2);
        AsyncSemaphore.Releaser secondHolds = await Within(second);
        secondHolds.Dispose();
        ValueTask<AsyncSemaphore.Releaser> secondAgain = semaphore.AcquireAsync();

        third.IsCompletedSuccessfully.Should().BeTrue("the released permit went to the older waiter");
        secondAgain.IsCompleted.Should().BeFalse();
        (await Within(first)).Dispose();
        secondAgain.IsCompletedSuccessfully.Should().BeTrue();
        (await Within(third)).Dispose();
        (await Within(secondAgain)).Dispose();
        semaphore.CurrentCount.Should().Be(2);
    }

    [Fact]
    public void Release_WithoutWaiters_AddsToTheCount()
    {
        // Toro SemaphoreTests.test_release_unacquired: an unbounded semaphore may be released past its initial count.
        var semaphore = new AsyncSemaphore(1);

        semaphore.Release();
        semaphore.Release(5);

        semaphore.CurrentCount.Should().Be(7);
        semaphore.TryAcquire().Should().BeTrue();
        semaphore.TryAcquire().Should().BeTrue();
        semaphore.CurrentCount.Should().Be(5);
    }

    // ---- TryAcquire and barging ----

    [Fact]
    public void TryAcquire_TakesPermitsUntilNoneAreLeft()
    {
        var semaphore = new AsyncSemaphore(2);

        semaphore.TryAcquire().Should().BeTrue();
        semaphore.TryAcquire().Should().BeTrue();
        semaphore.TryAcquire().Should().BeFalse();

        semaphore.CurrentCount.Should().Be(0);
        semaphore.Lines.Waiting.Should().Be(0, "TryAcquire never waits");
    }

    // ---- bounds ----

    [Fact]
    public void Release_BeyondMaxCount_ThrowsSemaphoreFullAndChangesNothing()
    {
        // Toro BoundedSemaphoreTests.test_release_unacquired, tornado BoundedSemaphoreTest.
        var semaphore = new AsyncSemaphore(1, maxCount: 1);

        semaphore.Invoking(s => s.Release()).Should().Throw<SemaphoreFullException>();
        semaphore.CurrentCount.Should().Be(1);

        semaphore.TryAcquire().Should().BeTrue();
        semaphore.Release();
        semaphore.Invoking(s => s.Release()).Should().Throw<SemaphoreFullException>();
        semaphore.CurrentCount.Should().Be(1);
    }

    [Fact]
    public void Release_ManyBeyondMaxCount_ThrowsAndReleasesNoneOfThem()
    {
        var semaphore = new AsyncSemaphore(1, maxCount: 3);

        semaphore.Invoking(s => s.Release(3)).Should().Throw<SemaphoreFullException>();

        semaphore.CurrentCount.Should().Be(1, "a release past the bound is all or nothing");
        semaphore.Release(2);
        semaphore.CurrentCount.Should().Be(3);
    }

    [Fact]
    public void Release_BeyondMaxCountWhileWaitersQueue_ThrowsAndWakesNobody()
    {
        var semaphore = new AsyncSemaphore(0, maxCount: 2);
        ValueTask<AsyncSemaphore.Releaser> waiter = semaphore.AcquireAsync();

        semaphore.Invoking(s => s.Release(3)).Should().Throw<SemaphoreFullException>();

        waiter.IsCompleted.Should().BeFalse();
        semaphore.Lines.Waiting.Should().Be(1);
        semaphore.CurrentCount.Should().Be(0);
        semaphore.Release(2);
        waiter.IsCompletedSuccessfully.Should().BeTrue();
        semaphore.CurrentCount.Should().Be(1);
    }

    [Fact]
    public void Release_ThatWouldOverflowTheCount_ThrowsSemaphoreFull()
    {
        var semaphore = new AsyncSemaphore(1);

        semaphore.Invoking(s => s.Release(int.MaxValue)).Should().Throw<SemaphoreFullException>();

        semaphore.CurrentCount.Should().Be(1);
        semaphore.Release(int.MaxValue - 1);
        semaphore.CurrentCount.Should().Be(int.MaxValue);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    public void Release_NonPositiveCount_ThrowsArgumentOutOfRange(int releaseCount)
    {
        var semaphore = new AsyncSemaphore(0, maxCount: 5);
        ValueTask<AsyncSemaphore.Releaser> waiter = semaphore.AcquireAsync();

        semaphore.Invoking(s => s.Release(releaseCount)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("releaseCount");

        waiter.IsCompleted.Should().BeFalse();
        semaphore.CurrentCount.Should().Be(0);
    }

    // ---- Releaser ----

    [Fact]
    public async Task Releaser_UsingBlock_HoldsAPermitInsideAndReturnsItAfter()
    {
        var semaphore = new AsyncSemaphore(2);

        using (await semaphore.AcquireAsync())
        {
            semaphore.CurrentCount.Should().Be(1);
            using (await semaphore.AcquireAsync())
            {
                semaphore.CurrentCount.Should().Be(0);
            }

            semaphore.CurrentCount.Should().Be(1);
        }

        semaphore.CurrentCount.Should().Be(2);
    }

    [Fact]
    public async Task Releaser_DisposedWhenAlreadyFull_ThrowsSemaphoreFull()
    {
        var semaphore = new AsyncSemaphore(1, maxCount: 1);
        AsyncSemaphore.Releaser releaser = await semaphore.AcquireAsync();
        releaser.Dispose();

        releaser.Invoking(r => r.Dispose()).Should().Throw<SemaphoreFullException>();
        semaphore.CurrentCount.Should().Be(1);
    }

    // ---- ToString ----

    [Fact]
    public void ToString_ShowsCountBoundAndWaiters()
    {
        var bounded = new AsyncSemaphore(1, maxCount: 4);
        bounded.ToString().Should().Be("AsyncSemaphore(count=1, max=4, waiters=0)");
        bounded.TryAcquire().Should().BeTrue();
        _ = bounded.AcquireAsync();
        _ = bounded.AcquireAsync();
        bounded.ToString().Should().Be("AsyncSemaphore(count=0, max=4, waiters=2)");

        new AsyncSemaphore(3).ToString().Should().Be("AsyncSemaphore(count=3, max=unbounded, waiters=0)");
    }

    [Fact]
    public void ToString_WithAName_ShowsItFirst()
    {
        var limit = new AsyncSemaphore(3, maxCount: 64) { Name = "partner-api" };
        limit.Name.Should().Be("partner-api");
        limit.ToString().Should().Be("AsyncSemaphore(name=\"partner-api\", count=3, max=64, waiters=0)");
        new AsyncSemaphore(1).Name.Should().BeNull();
    }

    // ---- cancellation ----

    [Fact]
    public async Task AcquireAsync_WaitersCancelledBeforeTheRelease_AreSkipped()
    {
        // asyncio test_acquire_cancel_before_awoken and test_acquire_hang
        var semaphore = new AsyncSemaphore(0);
        using var cts1 = new CancellationTokenSource();
        using var cts2 = new CancellationTokenSource();
        ValueTask<AsyncSemaphore.Releaser> t1 = semaphore.AcquireAsync(cts1.Token);
        ValueTask<AsyncSemaphore.Releaser> t2 = semaphore.AcquireAsync(cts2.Token);
        ValueTask<AsyncSemaphore.Releaser> t3 = semaphore.AcquireAsync();
        ValueTask<AsyncSemaphore.Releaser> t4 = semaphore.AcquireAsync();

        cts1.Cancel();
        cts2.Cancel();
        semaphore.Release();

        t3.IsCompletedSuccessfully.Should().BeTrue();
        t4.IsCompleted.Should().BeFalse();
        semaphore.CurrentCount.Should().Be(0, "the semaphore is still locked");
        await FluentActions.Awaiting(() => Within(t1)).Should().ThrowAsync<OperationCanceledException>();
        await FluentActions.Awaiting(() => Within(t2)).Should().ThrowAsync<OperationCanceledException>();
        (await Within(t3)).Dispose();
        (await Within(t4)).Dispose();
        semaphore.CurrentCount.Should().Be(1);
    }

    [Fact]
    public async Task Release_OfTwo_SkipsACancelledWaiterBetweenTheirWaiters()
    {
        // asyncio test_acquire_fifo_order_3, with the cancelled waiter between two others
        var semaphore = new AsyncSemaphore(0);
        using var cts = new CancellationTokenSource();
        ValueTask<AsyncSemaphore.Releaser> a = semaphore.AcquireAsync();
        ValueTask<AsyncSemaphore.Releaser> b = semaphore.AcquireAsync(cts.Token);
        ValueTask<AsyncSemaphore.Releaser> c = semaphore.AcquireAsync();
        ValueTask<AsyncSemaphore.Releaser> d = semaphore.AcquireAsync();

        cts.Cancel();
        semaphore.Release(2);

        a.IsCompletedSuccessfully.Should().BeTrue();
        c.IsCompletedSuccessfully.Should().BeTrue();
        d.IsCompleted.Should().BeFalse();
        semaphore.Lines.Waiting.Should().Be(1);
        await FluentActions.Awaiting(() => Within(b)).Should().ThrowAsync<OperationCanceledException>();
        await Within(a);
        await Within(c);
        semaphore.Release();
        await Within(d);
        semaphore.CurrentCount.Should().Be(0);
    }

    [Fact]
    public void AcquireAsync_AllWaitersCancelled_ReopensTheFastPath()
    {
        var semaphore = new AsyncSemaphore(0);
        using var cts = new CancellationTokenSource();
        _ = semaphore.AcquireAsync(cts.Token);
        _ = semaphore.AcquireAsync(cts.Token);

        cts.Cancel();
        semaphore.Release(2);

        semaphore.Lines.Waiting.Should().Be(0);
        semaphore.CurrentCount.Should().Be(2);
        semaphore.TryAcquire().Should().BeTrue();
        semaphore.TryAcquire().Should().BeTrue();
        semaphore.TryAcquire().Should().BeFalse();
    }

    // ---- continuations ----

    [Fact]
    public async Task Release_WithWaiters_NeverRunsTheirContinuationsInline()
    {
        var semaphore = new AsyncSemaphore(0);
        Task<bool>[] ranInsideRelease = Enumerable.Range(0, 3).Select(_ => ResumeAndReportAsync(semaphore.AcquireAsync())).ToArray();

        t_insideRelease = true;
        try
        {
            semaphore.Release(3);
        }
        finally
        {
            t_insideRelease = false;
        }

        bool[] inline = await Task.WhenAll(ranInsideRelease).WaitAsync(Bound);
        inline.Should().AllBeEquivalentTo(false);
        semaphore.CurrentCount.Should().Be(3);
    }

    // ---- races: nothing lost ----

    [Fact]
    public async Task AcquireAsync_CancellationsRacingRelease_ConservePermits()
    {
        const int Permits = 2;
        await StepLoop.RunAsync(async step =>
        {
            var semaphore = new AsyncSemaphore(0, maxCount: Permits);
            var random = new Random(2024);
            using var racer = new Racer();
            for (int i = 0; i < 2000; i++)
            {
                step();
                using var cts = new CancellationTokenSource();
                ValueTask<AsyncSemaphore.Releaser>[] waiters =
                [
                    semaphore.AcquireAsync(cts.Token),
                    semaphore.AcquireAsync(),
                    semaphore.AcquireAsync(cts.Token),
                    semaphore.AcquireAsync(),
                ];

                racer.Race(() => semaphore.Release(Permits), cts.Cancel, random);

                // Release and Cancel both decide outcomes synchronously, so the state is settled now.
                bool[] granted = waiters.Select(w => w.IsCompletedSuccessfully).ToArray();
                granted.Count(g => g).Should().Be(Permits, "every released permit went to exactly one waiter");
                semaphore.CurrentCount.Should().Be(0);
                waiters[0].IsCompleted.Should().BeTrue();
                waiters[2].IsCompleted.Should().BeTrue();
                AssertServedInOrder(granted);
                semaphore.Lines.Waiting.Should().Be(granted[3] ? 0 : 1);

                int holders = 0;
                for (int w = 0; w < waiters.Length; w++)
                {
                    if (granted[w])
                    {
                        (await Within(waiters[w])).Dispose();
                        holders++;
                    }
                    else if (w is 0 or 2)
                    {
                        await FluentActions.Awaiting(() => waiters[w].AsTask()).Should().ThrowAsync<OperationCanceledException>();
                    }
                }

                if (!granted[3])
                {
                    (await Within(waiters[3])).Dispose(); // a returned permit reached the last waiter
                    holders++;
                }

                holders.Should().BeGreaterThanOrEqualTo(Permits);
                semaphore.CurrentCount.Should().Be(Permits, "every permit came back");
                semaphore.Lines.Waiting.Should().Be(0);
                semaphore.TryAcquire().Should().BeTrue();
                semaphore.TryAcquire().Should().BeTrue();
            }
        });
    }

    [Fact]
    public async Task AcquireAsync_ManualTimeoutsRacingRelease_ConservePermits()
    {
        var time = new CountingTimeProvider();
        await StepLoop.RunAsync(async step =>
        {
            var semaphore = new AsyncSemaphore(0, maxCount: 2, timeProvider: time);
            var random = new Random(77);
            using var racer = new Racer();
            for (int i = 0; i < 2000; i++)
            {
                step();
                ValueTask<AsyncSemaphore.Releaser>[] waiters =
                [
                    semaphore.AcquireAsync(TimeSpan.FromSeconds(1)),
                    semaphore.AcquireAsync(),
                    semaphore.AcquireAsync(TimeSpan.FromSeconds(1)),
                    semaphore.AcquireAsync(),
                ];

                racer.Race(() => semaphore.Release(2), () => time.Advance(TimeSpan.FromSeconds(1)), random);

                bool[] granted = waiters.Select(w => w.IsCompletedSuccessfully).ToArray();
                granted.Count(g => g).Should().Be(2);
                waiters[0].IsCompleted.Should().BeTrue();
                waiters[2].IsCompleted.Should().BeTrue();
                AssertServedInOrder(granted);
                semaphore.CurrentCount.Should().Be(0);

                for (int w = 0; w < waiters.Length; w++)
                {
                    if (granted[w])
                    {
                        (await Within(waiters[w])).Dispose();
                    }
                    else if (w is 0 or 2)
                    {
                        await FluentActions.Awaiting(() => waiters[w].AsTask()).Should().ThrowAsync<TimeoutException>();
                    }
                }

                if (!granted[3])
                {
                    (await Within(waiters[3])).Dispose();
                }

                semaphore.CurrentCount.Should().Be(2);
                semaphore.Lines.Waiting.Should().Be(0);
                semaphore.TryAcquire().Should().BeTrue();
                semaphore.TryAcquire().Should().BeTrue();
            }
        });

        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task ManyTasks_WithRandomCancellationsAndTimeouts_NeverExceedThePermitsAndLoseNone()
    {
        const int Permits = 3;
        const int Workers = 8;
        const int Attempts = 1500;
        var semaphore = new AsyncSemaphore(Permits, maxCount: Permits);
        int inside = 0, overBound = 0, acquired = 0, cancelled = 0, timedOut = 0, refused = 0;

        await StepLoop.RunAsync(step => Task.WhenAll(Enumerable.Range(0, Workers).Select(w => Task.Run(async () =>
        {
            var random = new Random(100 + w);
            for (int i = 0; i < Attempts; i++)
            {
                step();
                using var cts = new CancellationTokenSource();
                try
                {
                    switch (random.Next(5))
                    {
                        case 0:
                            await semaphore.AcquireAsync().ConfigureAwait(false);
                            break;
                        case 1:
                            ValueTask<AsyncSemaphore.Releaser> pending = semaphore.AcquireAsync(cts.Token);
                            if (random.Next(2) == 0)
                            {
                                cts.Cancel();
                            }
                            else
                            {
                                cts.CancelAfter(1);
                            }

                            await pending.ConfigureAwait(false);
                            break;
                        case 2:
                            await semaphore.AcquireAsync(TimeSpan.FromMilliseconds(random.Next(2))).ConfigureAwait(false);
                            break;
                        case 3:
                            cts.CancelAfter(1);
                            await semaphore.AcquireAsync(TimeSpan.FromMilliseconds(1), cts.Token).ConfigureAwait(false);
                            break;
                        default:
                            if (!semaphore.TryAcquire())
                            {
                                Interlocked.Increment(ref refused);
                                continue;
                            }

                            break;
                    }
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref cancelled);
                    continue;
                }
                catch (TimeoutException)
                {
                    Interlocked.Increment(ref timedOut);
                    continue;
                }

                // Sometimes take a second permit without waiting (waiting for it could deadlock) and return both at once.
                int held = 1;
                if (random.Next(4) == 0 && semaphore.TryAcquire())
                {
                    held = 2;
                }

                if (Interlocked.Add(ref inside, held) > Permits)
                {
                    Interlocked.Increment(ref overBound);
                }

                Interlocked.Increment(ref acquired);
                if (random.Next(2) == 0)
                {
                    await Task.Yield();
                }

                Interlocked.Add(ref inside, -held);
                semaphore.Release(held);
            }
        }))));

        overBound.Should().Be(0);
        (acquired + cancelled + timedOut + refused).Should().Be(Workers * Attempts);
        acquired.Should().BePositive();
        semaphore.CurrentCount.Should().Be(Permits);
        semaphore.Lines.Waiting.Should().Be(0);
    }

    // ---- the fast path ----

    [Fact]
    public async Task Release_OfSeveralWithWaiters_GrantsThemAndChecksTheBoundFirst()
    {
        var semaphore = new AsyncSemaphore(0, 3);
        Task<AsyncSemaphore.Releaser> a = semaphore.AcquireAsync().AsTask();
        Task<AsyncSemaphore.Releaser> b = semaphore.AcquireAsync().AsTask();
        semaphore.Lines.Waiting.Should().Be(2);
        semaphore.CurrentCount.Should().Be(0, "never negative while waiters queue");
        semaphore.Invoking(s => s.Release(4)).Should().Throw<SemaphoreFullException>();
        semaphore.Lines.Waiting.Should().Be(2);
        semaphore.Release(3); // two go to the waiters, one stays
        await Task.WhenAll(a, b).WaitAsync(Bound);
        semaphore.CurrentCount.Should().Be(1);
        semaphore.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task TryAcquireAndRelease_Racing_NeitherOverGrantNorLosePermits()
    {
        for (int round = 0; round < 200; round++)
        {
            var semaphore = new AsyncSemaphore(1);
            int granted = 0;
            using var start = new Barrier(4);
            Task[] racers = Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
            {
                start.SignalAndWait();
                for (int i = 0; i < 50; i++)
                {
                    if (semaphore.TryAcquire())
                    {
                        Interlocked.Increment(ref granted);
                    }
                }
            })).ToArray();
            await Task.WhenAll(racers).WaitAsync(Bound);
            granted.Should().Be(1, "one permit is granted once (round {0})", round);
        }

        for (int round = 0; round < 200; round++)
        {
            var semaphore = new AsyncSemaphore(0);
            using var start = new Barrier(4);
            Task[] releasers = Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
            {
                start.SignalAndWait();
                for (int i = 0; i < 50; i++)
                {
                    semaphore.Release();
                }
            })).ToArray();
            await Task.WhenAll(releasers).WaitAsync(Bound);
            semaphore.CurrentCount.Should().Be(200, "no racing release is lost (round {0})", round);
        }
    }

    // ---- helpers ----

        /// <summary>
    /// Of four waiters (0 and 2 able to give up, 1 and 3 not) and two released permits, the permits went to the
    /// first two still in line: 1 always (at most one waiter is ahead of it), 2 only if 0 gave up first, 3 only if
    /// both 0 and 2 did.
    /// </summary>
    private static void AssertServedInOrder(bool[] granted)
    {
        granted[1].Should().BeTrue("only one waiter is ahead of waiter 1 and two permits were released");
        if (granted[2])
        {
            granted[0].Should().BeFalse("waiter 2 was served, so the older waiter 0 must have given up");
        }

        if (granted[3])
        {
            (granted[0] || granted[2]).Should().BeFalse("waiter 3 was served, so waiters 0 and 2 must have given up");
        }
    }

    private static async Task<bool> ResumeAndReportAsync(ValueTask<AsyncSemaphore.Releaser> pending)
    {
        AsyncSemaphore.Releaser releaser = await pending.ConfigureAwait(false);
        bool inline = t_insideRelease;
        releaser.Dispose();
        return inline;
    }
}
