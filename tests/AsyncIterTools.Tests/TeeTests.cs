using System.Runtime.CompilerServices;

namespace AsyncIterTools.Tests;

public sealed class TeeTests
{
    [Fact]
    public void InvalidArguments_ThrowAtTheCall()
    {
        var source = Sources.Of(SourceMode.Synchronous, 1);
        FluentActions.Invoking(() => ((IAsyncEnumerable<int>)null!).Tee()).Should().Throw<ArgumentNullException>().WithParameterName("source");
        FluentActions.Invoking(() => source.Tee(-1)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("count");
        FluentActions.Invoking(() => source.Tee(2, 0)).Should().Throw<ArgumentOutOfRangeException>().WithParameterName("maxBuffer");
        source.Tee(0).Should().BeEmpty();
        source.Enumerators.Should().Be(0);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task Empty_GivesEmptyCopies(SourceMode mode)
    {
        var source = Sources.Of<int>(mode);
        IAsyncEnumerable<int>[] copies = source.Tee(3);
        foreach (IAsyncEnumerable<int> copy in copies)
        {
            (await copy.ToListAsync()).Should().BeEmpty();
        }

        source.Enumerators.Should().Be(1);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task SecondCopyReadFullyFirst_ThenTheFirst_BothGetEverything(SourceMode mode)
    {
        var source = Sources.From(Enumerable.Range(0, 50), mode);
        IAsyncEnumerable<int>[] copies = source.Tee();
        source.Enumerators.Should().Be(0);

        (await copies[1].ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().Equal(Enumerable.Range(0, 50));
        (await copies[0].ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().Equal(Enumerable.Range(0, 50));

        source.Enumerators.Should().Be(1);
        source.Produced.Should().Be(50);
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task CopiesReadConcurrently_AllGetEverything(SourceMode mode)
    {
        var source = Sources.From(Enumerable.Range(0, 200), mode);
        IAsyncEnumerable<int>[] copies = source.Tee(4, maxBuffer: 3);
        List<int>[] results = await Task.WhenAll(copies.Select(c => Task.Run(() => c.ToListAsync().AsTask()))).WaitAsync(TestWork.Bound);
        foreach (List<int> r in results)
        {
            r.Should().Equal(Enumerable.Range(0, 200));
        }

        source.Produced.Should().Be(200);
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task MaxBuffer_CopyThatRunsAhead_WaitsForTheSlowest()
    {
        var source = Sources.From(Enumerable.Range(0, 10));
        IAsyncEnumerable<int>[] copies = source.Tee(2, maxBuffer: 2);
        await using IAsyncEnumerator<int> fast = copies[0].GetAsyncEnumerator();
        await using IAsyncEnumerator<int> slow = copies[1].GetAsyncEnumerator();

        (await fast.MoveNextAsync()).Should().BeTrue();
        (await fast.MoveNextAsync()).Should().BeTrue();
        ValueTask<bool> ahead = fast.MoveNextAsync();
        ahead.IsCompleted.Should().BeFalse();
        source.Produced.Should().Be(2);

        (await slow.MoveNextAsync()).Should().BeTrue();
        slow.Current.Should().Be(0);
        (await ahead.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        fast.Current.Should().Be(2);
        source.Produced.Should().Be(3);
    }

    [Fact]
    public async Task DisposingACopyEarly_DetachesIt()
    {
        var source = Sources.From(Enumerable.Range(0, 10));
        IAsyncEnumerable<int>[] copies = source.Tee(2, maxBuffer: 1);
        IAsyncEnumerator<int> quitter = copies[1].GetAsyncEnumerator();
        (await quitter.MoveNextAsync()).Should().BeTrue();
        await quitter.DisposeAsync();
        await quitter.DisposeAsync();

        (await copies[0].ToListAsync().AsTask().WaitAsync(TestWork.Bound)).Should().Equal(Enumerable.Range(0, 10));
        source.Disposals.Should().Be(1);
    }

    [Theory, MemberData(nameof(Sources.Modes), MemberType = typeof(Sources))]
    public async Task SourceError_ReachesEveryCopy_AtTheSamePosition(SourceMode mode)
    {
        var source = Sources.Failing(Enumerable.Range(0, 10), failAt: 3, mode);
        IAsyncEnumerable<int>[] copies = source.Tee(3);
        foreach (IAsyncEnumerable<int> copy in copies.Reverse())
        {
            var seen = new List<int>();
            Func<Task> act = async () =>
            {
                await foreach (int x in copy)
                {
                    seen.Add(x);
                }
            };

            (await act.Should().ThrowAsync<InvalidOperationException>()).Which.Should().BeSameAs(source.Failure);
            seen.Should().Equal(0, 1, 2);
        }

        source.Enumerators.Should().Be(1);
        source.Disposals.Should().Be(1);
    }

    [Fact]
    public async Task EachCopy_CanBeEnumeratedOnce()
    {
        IAsyncEnumerable<int>[] copies = Sources.Of(SourceMode.Synchronous, 1, 2).Tee();
        await using IAsyncEnumerator<int> e = copies[0].GetAsyncEnumerator();
        FluentActions.Invoking(() => copies[0].GetAsyncEnumerator()).Should().Throw<InvalidOperationException>()
            .WithMessage("*enumerated only once*", "the message says what was wrong");
    }

    [Fact]
    public async Task CopyCancellation_EndsThatCopysWait_OthersGoOn_LastDisposalCancelsAndDisposesTheSource()
    {
        var gate = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var stalled = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        CancellationToken sourceToken = default;
        int disposed = 0;
        async IAsyncEnumerable<int> Source([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
        {
            sourceToken = ct;
            try
            {
                yield return 1;
                stalled.SetResult(true);
                await gate.Task.WaitAsync(ct);
                yield return 2;
            }
            finally
            {
                Interlocked.Increment(ref disposed);
            }
        }

        IAsyncEnumerable<int>[] copies = Source().Tee();
        using var cts = new CancellationTokenSource();
        IAsyncEnumerator<int> a = copies[0].GetAsyncEnumerator(cts.Token);
        IAsyncEnumerator<int> b = copies[1].GetAsyncEnumerator();
        (await a.MoveNextAsync()).Should().BeTrue();
        ValueTask<bool> aNext = a.MoveNextAsync();
        await stalled.Task.WaitAsync(TestWork.Bound);
        cts.Cancel();
        await FluentActions.Awaiting(() => aNext.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        sourceToken.IsCancellationRequested.Should().BeFalse();

        (await b.MoveNextAsync()).Should().BeTrue();
        ValueTask<bool> bNext = b.MoveNextAsync();
        gate.SetResult(true);
        (await bNext.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        b.Current.Should().Be(2);

        await a.DisposeAsync();
        disposed.Should().Be(0);
        await b.DisposeAsync();
        disposed.Should().Be(1);
    }

    [Fact]
    public async Task LastDisposal_DuringAPendingRead_CancelsTheSourceAndAwaitsIt()
    {
        var stalled = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        int disposed = 0;
        async IAsyncEnumerable<int> Source([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
        {
            try
            {
                stalled.SetResult(true);
                await Task.Delay(Timeout.Infinite, ct);
                yield return 1;
            }
            finally
            {
                Interlocked.Increment(ref disposed);
            }
        }

        using var cts = new CancellationTokenSource();
        IAsyncEnumerable<int>[] copies = Source().Tee(1);
        IAsyncEnumerator<int> e = copies[0].GetAsyncEnumerator(cts.Token);
        ValueTask<bool> move = e.MoveNextAsync();
        await stalled.Task.WaitAsync(TestWork.Bound);
        cts.Cancel();
        await FluentActions.Awaiting(() => move.AsTask().WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        await e.DisposeAsync().AsTask().WaitAsync(TestWork.Bound);
        disposed.Should().Be(1);
    }

    [Fact]
    public async Task DisposingTheSlowestCopy_ReleasesACopyWaitingForRoom()
    {
        var source = Sources.From(Enumerable.Range(0, 5));
        IAsyncEnumerable<int>[] copies = source.Tee(2, maxBuffer: 1);
        await using IAsyncEnumerator<int> fast = copies[0].GetAsyncEnumerator();
        IAsyncEnumerator<int> slow = copies[1].GetAsyncEnumerator();

        (await fast.MoveNextAsync()).Should().BeTrue();
        ValueTask<bool> ahead = fast.MoveNextAsync();
        ahead.IsCompleted.Should().BeFalse("the buffer of 1 is full until the slow copy reads");

        await slow.DisposeAsync();
        (await ahead.AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue("the copy it waited for is gone");
        fast.Current.Should().Be(1);
    }

    [Fact]
    public async Task AfterTheEnd_MoveNextAsyncKeepsReturningFalse()
    {
        IAsyncEnumerable<int>[] copies = Sources.From(Enumerable.Range(0, 2)).Tee(2);
        await using IAsyncEnumerator<int> e = copies[0].GetAsyncEnumerator();
        (await e.MoveNextAsync()).Should().BeTrue();
        (await e.MoveNextAsync()).Should().BeTrue();
        (await e.MoveNextAsync()).Should().BeFalse();
        (await e.MoveNextAsync()).Should().BeFalse();
    }

    [Fact]
    public async Task ItemsEveryCopyHasPassed_AreNotKeptAlive()
    {
        var first = new WeakReference(null);
        IAsyncEnumerable<object>[] copies = Objects(first).Tee(2);
        await using IAsyncEnumerator<object> a = copies[0].GetAsyncEnumerator();
        await using IAsyncEnumerator<object> b = copies[1].GetAsyncEnumerator();
        for (int i = 0; i < 3; i++)
        {
            (await a.MoveNextAsync()).Should().BeTrue();
            if (i == 0)
            {
                // Checked while a copy still holds the first item: once both are past it, any collection (another
                // test's, or one the allocations trigger) may take it before the explicit one below.
                ShouldHoldTheFirstItem(first, a);
            }

            (await b.MoveNextAsync()).Should().BeTrue();
        }

        await Task.Yield(); // collect on a fresh stack
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        first.IsAlive.Should().BeFalse("both copies are past the first item, so the shared buffer must have let it go");
        (await a.MoveNextAsync()).Should().BeTrue("letting go of passed items must not cost the copies what is ahead");
        (await b.MoveNextAsync()).Should().BeTrue();
        a.Current.Should().BeSameAs(b.Current);
    }

    [Fact]
    public async Task ACopyDisposedEarly_DoesNotKeepTheItemsTheOtherCopiesHavePassed()
    {
        var first = new WeakReference(null);
        IAsyncEnumerable<object>[] copies = Objects(first).Tee(2);
        await using IAsyncEnumerator<object> a = copies[0].GetAsyncEnumerator();
        IAsyncEnumerator<object> disposed = copies[1].GetAsyncEnumerator();
        await disposed.DisposeAsync(); // having read nothing, its place in the shared list is still the list's start
        for (int i = 0; i < 3; i++)
        {
            (await a.MoveNextAsync()).Should().BeTrue();
            if (i == 0)
            {
                ShouldHoldTheFirstItem(first, a);
            }
        }

        // The disposed enumerator is still referenced (as a caller may keep it): what it kept of its place in the list
        // would keep every item from there on.
        await Task.Yield(); // collect on a fresh stack
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        first.IsAlive.Should().BeFalse("a disposed copy lets go of its place in the shared buffer");
        (await disposed.MoveNextAsync()).Should().BeFalse("a disposed copy has nothing more to read");
        (await a.MoveNextAsync()).Should().BeTrue();
    }

    // A method of its own, so that no slot of the test's frame is left holding the item: the continuation after
    // Task.Yield can collect on another thread while this thread is still leaving that frame (in a Debug build
    // every temporary stays reported until the frame is gone).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ShouldHoldTheFirstItem(WeakReference first, IAsyncEnumerator<object> copy) =>
        first.Target.Should().BeSameAs(copy.Current, "the test's own bookkeeping works");

    /// <summary>Ten new objects; the first is also put in <paramref name="first"/>, weakly.</summary>
    private static async IAsyncEnumerable<object> Objects(WeakReference first)
    {
        for (int i = 0; i < 10; i++)
        {
            var item = new object();
            if (i == 0)
            {
                first.Target = item;
            }

            yield return item;
        }

        await Task.CompletedTask;
    }
}
