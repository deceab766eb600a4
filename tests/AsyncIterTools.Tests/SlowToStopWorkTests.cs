namespace AsyncIterTools.Tests;

/// <summary>
/// "Nothing is left running" must hold for work and sources that take their time to stop: after the token they were
/// given is cancelled they still run for a while. Breaking out of the loop (DisposeAsync), or cancelling a pending
/// MoveNextAsync, does not return until every one of them has finished.
/// </summary>
public sealed class SlowToStopWorkTests
{
    public static TheoryData<string> Operators => new() { "Map", "MapUnordered", "AsCompleted", "Merge", "Prefetch", "BatchTimed" };

    [Theory, MemberData(nameof(Operators))]
    public async Task Break_WaitsForWorkStillStoppingAfterCancellation(string op)
    {
        var stopper = new SlowStopper();
        (IAsyncEnumerable<int> sequence, int parked) = Build(op, stopper);
        IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator();
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        e.Current.Should().Be(0);
        await stopper.WhenParked(parked).WaitAsync(TestWork.Bound);

        Task dispose = e.DisposeAsync().AsTask(); // the `break`
        await stopper.WhenStopping(parked).WaitAsync(TestWork.Bound);
        dispose.IsCompleted.Should().BeFalse("work that is still stopping has not finished");
        stopper.Finished.Should().Be(0);

        stopper.LetThemStop();
        await dispose.WaitAsync(TestWork.Bound);
        stopper.Finished.Should().Be(parked);
    }

    [Theory, MemberData(nameof(Operators))]
    public async Task CancelledWhileWaiting_ThrowsOnlyOnceWorkStillStoppingHasFinished(string op)
    {
        var stopper = new SlowStopper();
        (IAsyncEnumerable<int> sequence, int parked) = Build(op, stopper);
        using var cts = new CancellationTokenSource();
        IAsyncEnumerator<int> e = sequence.GetAsyncEnumerator(cts.Token);
        (await e.MoveNextAsync().AsTask().WaitAsync(TestWork.Bound)).Should().BeTrue();
        Task<bool> move = e.MoveNextAsync().AsTask();
        parked += op == "Merge" ? 1 : 0; // the move re-arms the source that yielded 0
        await stopper.WhenParked(parked).WaitAsync(TestWork.Bound);

        cts.Cancel();
        await stopper.WhenStopping(parked).WaitAsync(TestWork.Bound);
        move.IsCompleted.Should().BeFalse("the enumeration ends only when nothing it started is still running");

        stopper.LetThemStop();
        await FluentActions.Awaiting(() => move.WaitAsync(TestWork.Bound)).Should().ThrowAsync<OperationCanceledException>();
        stopper.Finished.Should().Be(parked, "every call and source read has finished when the cancellation surfaces");
        await e.DisposeAsync();
    }

    private static (IAsyncEnumerable<int> Sequence, int Parked) Build(string op, SlowStopper stopper)
    {
        IAsyncEnumerable<int> Numbers() => Sources.From(Enumerable.Range(0, 10));
        Func<int, CancellationToken, ValueTask<int>> selector = (x, ct) => x == 0 ? new ValueTask<int>(0) : new ValueTask<int>(stopper.RunAsync(x, ct));
        return op switch
        {
            // Item 0 is done at once; the window / the slots refill to 3 calls parked (1, 2, 3) before 0 is yielded.
            "Map" => (Numbers().Map(selector, 3), 3),
            "MapUnordered" => (Numbers().MapUnordered(selector, 3), 3),
            "AsCompleted" => (AsyncIter.AsCompleted(Enumerable.Range(0, 10).Select(i => (Func<CancellationToken, Task<int>>)(ct => i == 0 ? Task.FromResult(0) : stopper.RunAsync(i, ct))), 3), 3),
            "Merge" => (AsyncIter.Merge(stopper.Source(first: 0), stopper.Source(), stopper.Source()), 2),
            "Prefetch" => (stopper.Source(first: 0).Prefetch(2), 1),
            "BatchTimed" => (stopper.Source(first: 0).Batch(1, TimeSpan.FromHours(1)).Select(b => b[0]), 1),
            _ => throw new ArgumentOutOfRangeException(nameof(op)),
        };
    }

    /// <summary>Work that parks until cancelled, then keeps running until <see cref="LetThemStop"/>.</summary>
    private sealed class SlowStopper
    {
        private readonly TaskCompletionSource _stop = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly object _lock = new();
        private readonly List<(int Count, TaskCompletionSource Signal)> _parkedWaits = new();
        private readonly List<(int Count, TaskCompletionSource Signal)> _stoppingWaits = new();
        private int _parked;
        private int _stopping;
        private int _finished;

        public int Finished => Volatile.Read(ref _finished);

        public Task WhenParked(int count) => When(_parkedWaits, () => _parked, count);

        public Task WhenStopping(int count) => When(_stoppingWaits, () => _stopping, count);

        public void LetThemStop() => _stop.SetResult();

        public async Task<int> RunAsync(int id, CancellationToken cancellationToken)
        {
            await ParkAsync(cancellationToken);
            return id;
        }

        /// <summary>A source that yields <paramref name="first"/> (if given), then parks in its next MoveNextAsync.</summary>
        public async IAsyncEnumerable<int> Source(int? first = null, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            if (first is { } item)
            {
                yield return item;
            }

            await ParkAsync(cancellationToken);
            yield return -1;
        }

        private async Task ParkAsync(CancellationToken cancellationToken)
        {
            try
            {
                Bump(ref _parked, _parkedWaits);
                await new TaskCompletionSource().Task.WaitAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                Bump(ref _stopping, _stoppingWaits);
                await _stop.Task; // still busy after cancellation
                throw;
            }
            finally
            {
                Interlocked.Increment(ref _finished);
            }
        }

        private void Bump(ref int counter, List<(int Count, TaskCompletionSource Signal)> waits)
        {
            lock (_lock)
            {
                counter++;
                foreach ((int count, TaskCompletionSource signal) in waits)
                {
                    if (counter >= count)
                    {
                        signal.TrySetResult();
                    }
                }
            }
        }

        private Task When(List<(int Count, TaskCompletionSource Signal)> waits, Func<int> current, int count)
        {
            lock (_lock)
            {
                var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                if (current() >= count)
                {
                    signal.SetResult();
                }
                else
                {
                    waits.Add((count, signal));
                }

                return signal.Task;
            }
        }
    }
}
