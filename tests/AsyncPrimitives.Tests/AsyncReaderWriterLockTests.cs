using static AsyncPrimitives.Tests.Support.Settle;

namespace AsyncPrimitives.Tests;

/// <summary>
/// AsyncReaderWriterLock: the behaviour Toro's test_rwlock.py checks (shared readers up to max_readers, exclusive
/// writer, release of an unheld lock, timeouts), plus what Toro got wrong (a timed-out writer leaked the reader
/// permits it had collected) and the AsyncTools contract: one FIFO line, no writer starvation, no barging.
/// </summary>
public sealed class AsyncReaderWriterLockTests
{
    private static readonly TimeSpan s_bound = TimeSpan.FromSeconds(10);

    /// <summary>True only on the test's own thread while it is inside a release: a continuation that sees it ran inline.</summary>
    [ThreadStatic]
    private static bool t_insideRelease;

    [Fact]
    public void Constructor_Default_IsUnlockedWithUnboundedReaders()
    {
        var rw = new AsyncReaderWriterLock();

        rw.MaxReaders.Should().Be(int.MaxValue);
        rw.CurrentReaderCount.Should().Be(0);
        rw.IsWriteLockHeld.Should().BeFalse();
        rw.Lines.Waiting.Should().Be(0);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    public void Constructor_NonPositiveMaxReaders_ThrowsArgumentOutOfRange(int maxReaders)
    {
        FluentActions.Invoking(() => new AsyncReaderWriterLock(maxReaders))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("maxReaders");
    }

    [Fact]
    public async Task AcquireReadAsync_ManyReaders_HoldTheLockAtOnce()
    {
        var rw = new AsyncReaderWriterLock();
        var releasers = new List<AsyncReaderWriterLock.Releaser>();

        for (int i = 0; i < 10; i++)
        {
            ValueTask<AsyncReaderWriterLock.Releaser> read = rw.AcquireReadAsync();
            read.IsCompletedSuccessfully.Should().BeTrue();
            releasers.Add(await read);
        }

        rw.CurrentReaderCount.Should().Be(10);
        rw.IsWriteLockHeld.Should().BeFalse();
        releasers.Should().OnlyContain(r => !r.IsWriter);
        releasers.ForEach(r => r.Dispose());
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public void AcquireAndRelease_Uncontended_AllocateNothing()
    {
        var rw = new AsyncReaderWriterLock();
        AcquireAndReleaseUncontended(rw, 1); // warm up

        (bool allCompleted, long allocated) = AcquireAndReleaseUncontended(rw, 100);

        allCompleted.Should().BeTrue();
        allocated.Should().Be(0);
        rw.CurrentReaderCount.Should().Be(0);
        rw.IsWriteLockHeld.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireWriteAsync_WhenWriterHolds_ExcludesReadersAndWriters()
    {
        var rw = new AsyncReaderWriterLock();
        AsyncReaderWriterLock.Releaser writer = await rw.AcquireWriteAsync();
        writer.IsWriter.Should().BeTrue();
        rw.IsWriteLockHeld.Should().BeTrue();

        Task<AsyncReaderWriterLock.Releaser> reader = rw.AcquireReadAsync().AsTask();
        Task<AsyncReaderWriterLock.Releaser> writer2 = rw.AcquireWriteAsync().AsTask();

        rw.Lines.Waiting.Should().Be(2);
        rw.TryAcquireRead(out _).Should().BeFalse();
        rw.TryAcquireWrite(out _).Should().BeFalse();
        rw.CurrentReaderCount.Should().Be(0);

        writer.Dispose();
        (await reader.WaitAsync(s_bound)).IsWriter.Should().BeFalse();
        rw.IsWriteLockHeld.Should().BeFalse();
        rw.CurrentReaderCount.Should().Be(1);
        writer2.IsCompleted.Should().BeFalse("a reader holds the lock");

        (await reader).Dispose();
        (await writer2.WaitAsync(s_bound)).IsWriter.Should().BeTrue();
        rw.IsWriteLockHeld.Should().BeTrue();
        (await writer2).Dispose();
        rw.IsWriteLockHeld.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireWriteAsync_WhenReadersHold_WaitsForTheLastReader()
    {
        var rw = new AsyncReaderWriterLock();
        AsyncReaderWriterLock.Releaser r1 = await rw.AcquireReadAsync();
        AsyncReaderWriterLock.Releaser r2 = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> writer = rw.AcquireWriteAsync().AsTask();

        r1.Dispose();
        rw.Lines.Waiting.Should().Be(1);
        writer.IsCompleted.Should().BeFalse();
        r2.Dispose();

        (await writer.WaitAsync(s_bound)).Dispose();
        rw.IsWriteLockHeld.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireReadAsync_AtMaxReaders_WaitsUntilAReaderLeaves()
    {
        var rw = new AsyncReaderWriterLock(maxReaders: 2);
        AsyncReaderWriterLock.Releaser r1 = await rw.AcquireReadAsync();
        AsyncReaderWriterLock.Releaser r2 = await rw.AcquireReadAsync();

        Task<AsyncReaderWriterLock.Releaser> r3 = rw.AcquireReadAsync().AsTask();
        Task<AsyncReaderWriterLock.Releaser> r4 = rw.AcquireReadAsync().AsTask();
        rw.TryAcquireRead(out _).Should().BeFalse();
        rw.CurrentReaderCount.Should().Be(2);
        rw.Lines.Waiting.Should().Be(2);

        r1.Dispose();
        await r3.WaitAsync(s_bound);
        rw.CurrentReaderCount.Should().Be(2);
        r4.IsCompleted.Should().BeFalse();

        r2.Dispose();
        await r4.WaitAsync(s_bound);
        (await r3).Dispose();
        (await r4).Dispose();
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public async Task AcquireReadAsync_BehindAWaitingWriter_WaitsSoWritersNeverStarve()
    {
        var rw = new AsyncReaderWriterLock();
        AsyncReaderWriterLock.Releaser r1 = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> writer = rw.AcquireWriteAsync().AsTask();

        Task<AsyncReaderWriterLock.Releaser> r2 = rw.AcquireReadAsync().AsTask();

        r2.IsCompleted.Should().BeFalse("a reader that arrives after a waiting writer waits behind it");
        rw.TryAcquireRead(out _).Should().BeFalse("TryAcquireRead does not barge past the waiting writer");
        rw.CurrentReaderCount.Should().Be(1);
        rw.Lines.Waiting.Should().Be(2);

        r1.Dispose();
        (await writer.WaitAsync(s_bound)).IsWriter.Should().BeTrue();
        r2.IsCompleted.Should().BeFalse();

        (await writer).Dispose();
        (await r2.WaitAsync(s_bound)).Dispose();
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public async Task Waiters_MixedReadersAndWriters_AreServedInFifoOrderWithConsecutiveReadersTogether()
    {
        var rw = new AsyncReaderWriterLock();
        AsyncReaderWriterLock.Releaser first = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> w1 = rw.AcquireWriteAsync().AsTask();
        Task<AsyncReaderWriterLock.Releaser> r2 = rw.AcquireReadAsync().AsTask();
        Task<AsyncReaderWriterLock.Releaser> r3 = rw.AcquireReadAsync().AsTask();
        Task<AsyncReaderWriterLock.Releaser> w2 = rw.AcquireWriteAsync().AsTask();
        Task<AsyncReaderWriterLock.Releaser> r4 = rw.AcquireReadAsync().AsTask();
        Task<AsyncReaderWriterLock.Releaser> r5 = rw.AcquireReadAsync().AsTask();
        rw.Lines.Waiting.Should().Be(6);

        first.Dispose();
        await w1.WaitAsync(s_bound);
        rw.Lines.Waiting.Should().Be(5);

        (await w1).Dispose();
        await Task.WhenAll(r2, r3).WaitAsync(s_bound);
        rw.CurrentReaderCount.Should().Be(2, "the consecutive readers at the head are admitted together");
        rw.Lines.Waiting.Should().Be(3, "w2 waits, and r4, r5 wait behind it");

        (await r2).Dispose();
        w2.IsCompleted.Should().BeFalse();
        (await r3).Dispose();
        await w2.WaitAsync(s_bound);
        rw.IsWriteLockHeld.Should().BeTrue();

        (await w2).Dispose();
        await Task.WhenAll(r4, r5).WaitAsync(s_bound);
        rw.CurrentReaderCount.Should().Be(2);
        (await r4).Dispose();
        (await r5).Dispose();
        rw.Lines.Waiting.Should().Be(0);
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public async Task AcquireWriteAsync_ContendedWriters_AcquireInFifoOrder()
    {
        var rw = new AsyncReaderWriterLock();
        var order = new List<int>();
        AsyncReaderWriterLock.Releaser held = await rw.AcquireWriteAsync();
        Task[] writers = Enumerable.Range(0, 5).Select(async i =>
        {
            using (await rw.AcquireWriteAsync())
            {
                lock (order)
                {
                    order.Add(i);
                }
            }
        }).ToArray();

        held.Dispose();

        await Task.WhenAll(writers).WaitAsync(s_bound);
        order.Should().Equal(0, 1, 2, 3, 4);
        rw.IsWriteLockHeld.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireWriteAsync_TimedOut_HoldsNothingAndTheReadersItHeldBackAreAdmitted()
    {
        // Toro's RWLock leaks the reader permits a timed-out writer had collected; this lock must not.
        var time = new CountingTimeProvider();
        var rw = new AsyncReaderWriterLock(timeProvider: time);
        AsyncReaderWriterLock.Releaser r1 = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> writer = rw.AcquireWriteAsync(TimeSpan.FromSeconds(1)).AsTask();
        Task<AsyncReaderWriterLock.Releaser> r2 = rw.AcquireReadAsync().AsTask();
        Task<AsyncReaderWriterLock.Releaser> r3 = rw.AcquireReadAsync().AsTask();

        time.Advance(TimeSpan.FromSeconds(1));

        await ThrowsSoon<TimeoutException>(writer);
        await Task.WhenAll(r2, r3).WaitAsync(s_bound);
        rw.CurrentReaderCount.Should().Be(3);
        rw.IsWriteLockHeld.Should().BeFalse();
        rw.Lines.Waiting.Should().Be(0);

        r1.Dispose();
        (await r2).Dispose();
        (await r3).Dispose();
        rw.CurrentReaderCount.Should().Be(0);
        rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser w).Should().BeTrue("the timed-out writer holds nothing");
        w.Dispose();
        time.ActiveTimers.Should().Be(0);
    }

    [Fact]
    public async Task AcquireWriteAsync_TimedOutWhileAWriterHolds_HoldsNothing()
    {
        var time = new FakeTimeProvider();
        var rw = new AsyncReaderWriterLock(timeProvider: time);
        AsyncReaderWriterLock.Releaser held = await rw.AcquireWriteAsync();
        Task<AsyncReaderWriterLock.Releaser> timedOut = rw.AcquireWriteAsync(TimeSpan.FromHours(1)).AsTask(); // only the given clock can end it
        Task<AsyncReaderWriterLock.Releaser> reader = rw.AcquireReadAsync().AsTask();

        time.Advance(TimeSpan.FromHours(1));
        await ThrowsSoon<TimeoutException>(timedOut);
        rw.IsWriteLockHeld.Should().BeTrue("the first writer still holds it");
        rw.Lines.Waiting.Should().Be(1);

        held.Dispose();
        (await reader.WaitAsync(s_bound)).Dispose();
        rw.IsWriteLockHeld.Should().BeFalse();
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public async Task ReleaseRead_WhileAWriterHoldsAndAReaderWaits_ThrowsAndChangesNothing()
    {
        var rw = new AsyncReaderWriterLock();
        AsyncReaderWriterLock.Releaser writer = await rw.AcquireWriteAsync();
        ValueTask<AsyncReaderWriterLock.Releaser> reader = rw.AcquireReadAsync();

        rw.Invoking(l => l.ReleaseRead()).Should().Throw<SynchronizationLockException>();

        rw.IsWriteLockHeld.Should().BeTrue();
        reader.IsCompleted.Should().BeFalse();
        writer.Dispose();
        (await reader.AsTask().WaitAsync(s_bound)).Dispose();
        rw.CurrentReaderCount.Should().Be(0);
        rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser again).Should().BeTrue();
        again.Dispose();
    }

    [Fact]
    public async Task AcquireWriteAsync_Cancelled_HoldsNothingAndTheReadersItHeldBackAreAdmitted()
    {
        var rw = new AsyncReaderWriterLock();
        using var cts = new CancellationTokenSource();
        AsyncReaderWriterLock.Releaser r1 = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> writer = rw.AcquireWriteAsync(cts.Token).AsTask();
        Task<AsyncReaderWriterLock.Releaser> r2 = rw.AcquireReadAsync().AsTask();

        cts.Cancel();

        (await ThrowsSoon<OperationCanceledException>(writer)).CancellationToken.Should().Be(cts.Token);
        (await r2.WaitAsync(s_bound)).Dispose();
        r1.Dispose();
        rw.Lines.Waiting.Should().Be(0);
        rw.CurrentReaderCount.Should().Be(0);
        rw.IsWriteLockHeld.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireWriteAsync_TimedOutAtTheHead_AdmitsOnlyAsManyReadersAsMaxReadersAllows()
    {
        var time = new FakeTimeProvider();
        var rw = new AsyncReaderWriterLock(maxReaders: 2, timeProvider: time);
        AsyncReaderWriterLock.Releaser r1 = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> writer = rw.AcquireWriteAsync(TimeSpan.FromSeconds(1)).AsTask();
        Task<AsyncReaderWriterLock.Releaser> r2 = rw.AcquireReadAsync().AsTask();
        Task<AsyncReaderWriterLock.Releaser> r3 = rw.AcquireReadAsync().AsTask();

        time.Advance(TimeSpan.FromSeconds(1));

        await ThrowsSoon<TimeoutException>(writer);
        await r2.WaitAsync(s_bound);
        rw.CurrentReaderCount.Should().Be(2);
        rw.Lines.Waiting.Should().Be(1);
        r3.IsCompleted.Should().BeFalse();

        r1.Dispose();
        (await r3.WaitAsync(s_bound)).Dispose();
        (await r2).Dispose();
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public async Task AcquireReadAsync_TimedOut_LeavesTheLineAndTheNextReaderIsServed()
    {
        // Toro test_acquire_timeout (read side): the lock stays held by its holder.
        var time = new FakeTimeProvider();
        var rw = new AsyncReaderWriterLock(maxReaders: 1, timeProvider: time);
        AsyncReaderWriterLock.Releaser held = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> timedOut = rw.AcquireReadAsync(TimeSpan.FromSeconds(1)).AsTask();
        Task<AsyncReaderWriterLock.Releaser> next = rw.AcquireReadAsync().AsTask();

        time.Advance(TimeSpan.FromSeconds(1));

        await ThrowsSoon<TimeoutException>(timedOut);
        rw.CurrentReaderCount.Should().Be(1);
        rw.Lines.Waiting.Should().Be(1);
        held.Dispose();
        (await next.WaitAsync(s_bound)).Dispose();
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_PreCancelledToken_FailsAtOnceEvenIfFree()
    {
        var rw = new AsyncReaderWriterLock();
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        ValueTask<AsyncReaderWriterLock.Releaser> read = rw.AcquireReadAsync(cts.Token);
        rw.AcquireReadAsync(TimeSpan.FromSeconds(1), cts.Token).IsCanceled.Should().BeTrue();
        rw.AcquireWriteAsync(cts.Token).IsCanceled.Should().BeTrue();
        rw.AcquireWriteAsync(TimeSpan.FromSeconds(1), cts.Token).IsCanceled.Should().BeTrue();

        read.IsCanceled.Should().BeTrue();
        await FluentActions.Awaiting(() => read.AsTask()).Should().ThrowAsync<OperationCanceledException>();
        rw.CurrentReaderCount.Should().Be(0);
        rw.IsWriteLockHeld.Should().BeFalse();
        rw.Lines.Waiting.Should().Be(0);
    }

    [Fact]
    public async Task AcquireAsync_ZeroTimeout_SucceedsWhenFreeAndTimesOutAtOnceWhenNot()
    {
        var time = new CountingTimeProvider();
        var rw = new AsyncReaderWriterLock(timeProvider: time);

        ValueTask<AsyncReaderWriterLock.Releaser> read = rw.AcquireReadAsync(TimeSpan.Zero);
        read.IsCompletedSuccessfully.Should().BeTrue();
        AsyncReaderWriterLock.Releaser reader = await read;

        ValueTask<AsyncReaderWriterLock.Releaser> write = rw.AcquireWriteAsync(TimeSpan.Zero);
        write.IsFaulted.Should().BeTrue();
        write.AsTask().Exception!.InnerException.Should().BeOfType<TimeoutException>();
        rw.Lines.Waiting.Should().Be(0);

        reader.Dispose();
        ValueTask<AsyncReaderWriterLock.Releaser> write2 = rw.AcquireWriteAsync(TimeSpan.Zero);
        write2.IsCompletedSuccessfully.Should().BeTrue();
        AsyncReaderWriterLock.Releaser writer = await write2;
        rw.AcquireReadAsync(TimeSpan.Zero).IsFaulted.Should().BeTrue();
        writer.Dispose();
        time.TimerCreations.Should().Be(0);
    }

    public static TheoryData<TimeSpan> InvalidTimeouts => new()
    {
        TimeSpan.FromMilliseconds(-2),
        TimeSpan.FromTicks(-1),
        TimeSpan.MinValue,
        TimeSpan.MaxValue,
    };

    [Theory]
    [MemberData(nameof(InvalidTimeouts))]
    public void AcquireAsync_InvalidTimeout_ThrowsArgumentOutOfRange(TimeSpan timeout)
    {
        var rw = new AsyncReaderWriterLock();

        FluentActions.Invoking(() => rw.AcquireReadAsync(timeout))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
        FluentActions.Invoking(() => rw.AcquireWriteAsync(timeout))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("timeout");
        rw.CurrentReaderCount.Should().Be(0);
        rw.IsWriteLockHeld.Should().BeFalse();
    }

    [Fact]
    public async Task Release_Unheld_ThrowsSynchronizationLockException()
    {
        var rw = new AsyncReaderWriterLock();

        FluentActions.Invoking(rw.ReleaseRead).Should().Throw<SynchronizationLockException>();
        FluentActions.Invoking(rw.ReleaseWrite).Should().Throw<SynchronizationLockException>();

        AsyncReaderWriterLock.Releaser reader = await rw.AcquireReadAsync();
        FluentActions.Invoking(rw.ReleaseWrite).Should().Throw<SynchronizationLockException>("only a read lock is held");
        reader.Dispose();
        FluentActions.Invoking(reader.Dispose).Should().Throw<SynchronizationLockException>("a second release is misuse");

        AsyncReaderWriterLock.Releaser writer = await rw.AcquireWriteAsync();
        FluentActions.Invoking(rw.ReleaseRead).Should().Throw<SynchronizationLockException>("only the write lock is held");
        writer.Dispose();
        FluentActions.Invoking(writer.Dispose).Should().Throw<SynchronizationLockException>();
        rw.IsWriteLockHeld.Should().BeFalse();
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public async Task ReadReleaser_DisposedAgainWhileAnotherReaderHolds_ReleasesThatReadersLock_AsDocumented()
    {
        var rw = new AsyncReaderWriterLock();
        AsyncReaderWriterLock.Releaser mine = await rw.AcquireReadAsync();
        _ = await rw.AcquireReadAsync(); // the other reader's, never disposed here: its lock is released below
        Task<AsyncReaderWriterLock.Releaser> writer = rw.AcquireWriteAsync().AsTask();

        mine.Dispose();
        mine.Dispose(); // misuse: indistinguishable from the other reader's release

        rw.CurrentReaderCount.Should().Be(0);
        using AsyncReaderWriterLock.Releaser granted = await writer.WaitAsync(TimeSpan.FromSeconds(10));
        granted.IsWriter.Should().BeTrue("the second disposal released the other reader's lock, so the writer got in");
    }

    [Fact]
    public void ReleaseReadAndReleaseWrite_ReleaseWhatTheTryMethodsTook()
    {
        var rw = new AsyncReaderWriterLock();

        rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser reader).Should().BeTrue();
        reader.IsWriter.Should().BeFalse();
        rw.TryAcquireWrite(out _).Should().BeFalse();
        rw.ReleaseRead();

        rw.TryAcquireWrite(out AsyncReaderWriterLock.Releaser writer).Should().BeTrue();
        writer.IsWriter.Should().BeTrue();
        rw.TryAcquireRead(out _).Should().BeFalse();
        rw.ReleaseWrite();

        rw.IsWriteLockHeld.Should().BeFalse();
        rw.CurrentReaderCount.Should().Be(0);
    }

    [Fact]
    public void DefaultReleaser_Dispose_DoesNothing()
    {
        var rw = new AsyncReaderWriterLock();
        rw.TryAcquireRead(out AsyncReaderWriterLock.Releaser unused).Should().BeTrue();

        default(AsyncReaderWriterLock.Releaser).Dispose();

        rw.CurrentReaderCount.Should().Be(1);
        unused.Dispose();
    }

    [Fact]
    public async Task TryAcquireWrite_WhileAReaderWaitsAtMaxReaders_DoesNotBarge()
    {
        var rw = new AsyncReaderWriterLock(maxReaders: 1);
        AsyncReaderWriterLock.Releaser held = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> waiting = rw.AcquireReadAsync().AsTask();

        rw.TryAcquireRead(out _).Should().BeFalse();
        rw.TryAcquireWrite(out _).Should().BeFalse();
        held.Dispose();
        AsyncReaderWriterLock.Releaser next = await waiting.WaitAsync(s_bound);

        rw.CurrentReaderCount.Should().Be(1, "the released slot went to the waiter, not to a newcomer");
        next.Dispose();
    }

    [Fact]
    public async Task ReleaseWrite_NeverRunsAWaitersContinuationInline()
    {
        var rw = new AsyncReaderWriterLock();
        AsyncReaderWriterLock.Releaser writer = await rw.AcquireWriteAsync();
        Task<bool> reader = AcquireAndReportInline(rw, write: false);
        Task<bool> secondReader = AcquireAndReportInline(rw, write: false);

        t_insideRelease = true;
        try
        {
            writer.Dispose();
        }
        finally
        {
            t_insideRelease = false;
        }

        (await Task.WhenAll(reader, secondReader).WaitAsync(s_bound)).Should().OnlyContain(inline => !inline);
    }

    [Fact]
    public async Task ReleaseRead_NeverRunsAWaitersContinuationInline()
    {
        var rw = new AsyncReaderWriterLock();
        AsyncReaderWriterLock.Releaser reader = await rw.AcquireReadAsync();
        Task<bool> writer = AcquireAndReportInline(rw, write: true);

        t_insideRelease = true;
        try
        {
            reader.Dispose();
        }
        finally
        {
            t_insideRelease = false;
        }

        (await writer.WaitAsync(s_bound)).Should().BeFalse("ReleaseRead must not run the writer's continuation on its own stack");
    }

    [Fact]
    public async Task ToString_ShowsReadersWriterAndWaiters()
    {
        var rw = new AsyncReaderWriterLock();
        rw.ToString().Should().Be("AsyncReaderWriterLock(readers=0, writer=False, waiters=0)");

        AsyncReaderWriterLock.Releaser r1 = await rw.AcquireReadAsync();
        AsyncReaderWriterLock.Releaser r2 = await rw.AcquireReadAsync();
        Task<AsyncReaderWriterLock.Releaser> writer = rw.AcquireWriteAsync().AsTask();
        rw.ToString().Should().Be("AsyncReaderWriterLock(readers=2, writer=False, waiters=1)");

        r1.Dispose();
        r2.Dispose();
        AsyncReaderWriterLock.Releaser w = await writer.WaitAsync(s_bound);
        rw.ToString().Should().Be("AsyncReaderWriterLock(readers=0, writer=True, waiters=0)");
        w.Dispose();
    }

    [Fact]
    public async Task ToString_WithAName_ShowsItFirst()
    {
        var rw = new AsyncReaderWriterLock { Name = "routes" };
        rw.Name.Should().Be("routes");
        using (await rw.AcquireReadAsync())
        {
            rw.ToString().Should().Be("AsyncReaderWriterLock(name=\"routes\", readers=1, writer=False, waiters=0)");
        }

        new AsyncReaderWriterLock().Name.Should().BeNull();
    }

    [Fact]
    public async Task Cancellation_RacingReleaseWrite_TheReadLockIsGrantedOrPassedOn()
    {
        for (int i = 0; i < 300; i++)
        {
            var rw = new AsyncReaderWriterLock();
            using var cts = new CancellationTokenSource();
            AsyncReaderWriterLock.Releaser writer = await rw.AcquireWriteAsync();
            Task<AsyncReaderWriterLock.Releaser> racing = rw.AcquireReadAsync(cts.Token).AsTask();
            Task<AsyncReaderWriterLock.Releaser> nextWriter = rw.AcquireWriteAsync().AsTask();

            await RunTogether(cts.Cancel, writer.Dispose);

            await FinishesAsync(racing);
            if (racing.IsCompletedSuccessfully)
            {
                rw.CurrentReaderCount.Should().Be(1, "the grant won: the reader holds the lock (iteration {0})", i);
                nextWriter.IsCompleted.Should().BeFalse();
                (await racing).Dispose();
            }
            else
            {
                racing.IsCanceled.Should().BeTrue();
            }

            (await nextWriter.WaitAsync(s_bound)).Dispose();
            rw.IsWriteLockHeld.Should().BeFalse();
            rw.CurrentReaderCount.Should().Be(0);
            rw.Lines.Waiting.Should().Be(0);
        }
    }

    [Fact]
    public async Task Cancellation_RacingReleaseRead_TheWriteLockIsGrantedOrTheReadersBehindAreAdmitted()
    {
        for (int i = 0; i < 300; i++)
        {
            var rw = new AsyncReaderWriterLock();
            using var cts = new CancellationTokenSource();
            AsyncReaderWriterLock.Releaser reader = await rw.AcquireReadAsync();
            Task<AsyncReaderWriterLock.Releaser> racing = rw.AcquireWriteAsync(cts.Token).AsTask();
            Task<AsyncReaderWriterLock.Releaser> behind = rw.AcquireReadAsync().AsTask();

            await RunTogether(cts.Cancel, reader.Dispose);

            await FinishesAsync(racing);
            if (racing.IsCompletedSuccessfully)
            {
                rw.IsWriteLockHeld.Should().BeTrue("the grant won: the writer holds the lock (iteration {0})", i);
                behind.IsCompleted.Should().BeFalse();
                (await racing).Dispose();
            }
            else
            {
                racing.IsCanceled.Should().BeTrue();
            }

            (await behind.WaitAsync(s_bound)).Dispose();
            rw.IsWriteLockHeld.Should().BeFalse();
            rw.CurrentReaderCount.Should().Be(0);
            rw.Lines.Waiting.Should().Be(0);
        }
    }

    [Fact]
    public async Task RandomReadersAndWriters_WithCancellationsAndTimeouts_NeverMixAndReturnEverything()
    {
        const int MaxReaders = 3, Workers = 6, Iterations = 1500;
        var rw = new AsyncReaderWriterLock(MaxReaders);
        int readersInside = 0, writersInside = 0, violations = 0;
        int reads = 0, writes = 0, failures = 0;

        Task[] workers = Enumerable.Range(0, Workers).Select(w => Task.Run(async () =>
        {
            var rng = new Random(w);
            for (int i = 0; i < Iterations; i++)
            {
                bool write = rng.Next(3) == 0;
                using var cts = new CancellationTokenSource();
                if (rng.Next(16) == 0)
                {
                    cts.Cancel(); // fails at once, even when nothing else is inside (as on a loaded machine, where
                                  // the workers seldom overlap and no wait times out)
                }

                ValueTask<AsyncReaderWriterLock.Releaser> pending = rng.Next(3) switch
                {
                    0 => write ? rw.AcquireWriteAsync(cts.Token) : rw.AcquireReadAsync(cts.Token),
                    1 => write
                        ? rw.AcquireWriteAsync(TimeSpan.FromMilliseconds(rng.Next(0, 2)), cts.Token)
                        : rw.AcquireReadAsync(TimeSpan.FromMilliseconds(rng.Next(0, 2)), cts.Token),
                    _ => write ? rw.AcquireWriteAsync() : rw.AcquireReadAsync(),
                };
                if (rng.Next(4) == 0)
                {
                    cts.Cancel();
                }

                AsyncReaderWriterLock.Releaser releaser;
                try
                {
                    releaser = await pending;
                }
                catch (Exception ex) when (ex is OperationCanceledException or TimeoutException)
                {
                    Interlocked.Increment(ref failures);
                    continue;
                }

                if (releaser.IsWriter != write)
                {
                    Interlocked.Increment(ref violations);
                }

                if (write)
                {
                    int writers = Interlocked.Increment(ref writersInside);
                    if (writers != 1 || Volatile.Read(ref readersInside) != 0)
                    {
                        Interlocked.Increment(ref violations);
                    }

                    Interlocked.Increment(ref writes);
                }
                else
                {
                    int readers = Interlocked.Increment(ref readersInside);
                    if (readers > MaxReaders || Volatile.Read(ref writersInside) != 0)
                    {
                        Interlocked.Increment(ref violations);
                    }

                    Interlocked.Increment(ref reads);
                }

                if (rng.Next(2) == 0)
                {
                    await Task.Yield();
                }

                if (write)
                {
                    Interlocked.Decrement(ref writersInside);
                }
                else
                {
                    Interlocked.Decrement(ref readersInside);
                }

                releaser.Dispose();
            }
        })).ToArray();

        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(30));

        violations.Should().Be(0);
        (reads + writes + failures).Should().Be(Workers * Iterations);
        reads.Should().BeGreaterThan(0);
        writes.Should().BeGreaterThan(0);
        failures.Should().BeGreaterThan(0);
        rw.CurrentReaderCount.Should().Be(0);
        rw.IsWriteLockHeld.Should().BeFalse();
        rw.Lines.Waiting.Should().Be(0);
    }

    /// <summary>Takes and releases a read lock and the write lock <paramref name="times"/> times each, uncontended,
    /// consuming each ValueTask synchronously; reports whether all completed synchronously and the bytes allocated.</summary>
    private static (bool AllCompleted, long Allocated) AcquireAndReleaseUncontended(AsyncReaderWriterLock rw, int times)
    {
        bool allCompleted = true;
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < times; i++)
        {
            ValueTask<AsyncReaderWriterLock.Releaser> read = rw.AcquireReadAsync();
            allCompleted &= read.IsCompletedSuccessfully;
            read.GetAwaiter().GetResult().Dispose();
            ValueTask<AsyncReaderWriterLock.Releaser> write = rw.AcquireWriteAsync(TimeSpan.FromSeconds(1));
            allCompleted &= write.IsCompletedSuccessfully;
            write.GetAwaiter().GetResult().Dispose();
        }

        return (allCompleted, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    private static async Task<bool> AcquireAndReportInline(AsyncReaderWriterLock rw, bool write)
    {
        using (write ? await rw.AcquireWriteAsync() : await rw.AcquireReadAsync())
        {
            return t_insideRelease;
        }
    }

    /// <summary>Runs two actions on two pool threads, released together, and waits for both.</summary>
    private static async Task RunTogether(Action first, Action second)
    {
        using var barrier = new Barrier(2);
        Task a = Task.Run(() =>
        {
            barrier.SignalAndWait(s_bound);
            first();
        });
        Task b = Task.Run(() =>
        {
            barrier.SignalAndWait(s_bound);
            second();
        });
        await Task.WhenAll(a, b).WaitAsync(s_bound);
    }
}
