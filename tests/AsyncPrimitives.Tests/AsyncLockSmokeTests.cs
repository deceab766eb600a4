namespace AsyncPrimitives.Tests;

public sealed class AsyncLockSmokeTests
{
    [Fact]
    public async Task AcquireAsync_WhenHeld_WaitsInFifoOrder()
    {
        var gate = new AsyncLock();
        var first = await gate.AcquireAsync();
        var order = new List<int>();
        var waits = Enumerable.Range(0, 5).Select(async i =>
        {
            using (await gate.AcquireAsync())
            {
                lock (order) { order.Add(i); }
            }
        }).ToArray();
        first.Dispose();
        await Task.WhenAll(waits).WaitAsync(TimeSpan.FromSeconds(10));
        order.Should().Equal(0, 1, 2, 3, 4);
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public async Task AcquireAsync_Timeout_LeavesNothingBehind()
    {
        var time = new ManualTimeProvider();
        var gate = new AsyncLock(time);
        var held = await gate.AcquireAsync();
        var waiting = gate.AcquireAsync(TimeSpan.FromSeconds(1)).AsTask();
        time.Advance(TimeSpan.FromSeconds(1));
        await waiting.Invoking(t => t.WaitAsync(TimeSpan.FromSeconds(10))).Should().ThrowAsync<TimeoutException>();
        held.Dispose();
        gate.IsLocked.Should().BeFalse();
        gate.TryAcquire(out var r).Should().BeTrue();
        r.Dispose();
    }

    [Fact]
    public async Task Stress_CancellationRacingRelease_ConservesThePermit()
    {
        var gate = new AsyncLock();
        int inside = 0, acquired = 0, canceled = 0;
        var tasks = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            var rng = new Random(w);
            for (int i = 0; i < 2000; i++)
            {
                using var cts = new CancellationTokenSource();
                var pending = gate.AcquireAsync(cts.Token);
                if (rng.Next(3) == 0) cts.Cancel();
                AsyncLock.Releaser releaser;
                try { releaser = await pending; }
                catch (OperationCanceledException) { Interlocked.Increment(ref canceled); continue; }
                Interlocked.Increment(ref inside).Should().Be(1);
                Interlocked.Increment(ref acquired);
                if (rng.Next(2) == 0) await Task.Yield();
                Interlocked.Decrement(ref inside);
                releaser.Dispose();
            }
        })).ToArray();
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(60));
        (acquired + canceled).Should().Be(16000);
        gate.IsLocked.Should().BeFalse();
        gate.WaiterCount.Should().Be(0);
    }
}
