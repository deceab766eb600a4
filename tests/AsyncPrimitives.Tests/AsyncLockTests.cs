using AsyncPrimitives.Internal;

namespace AsyncPrimitives.Tests;

/// <summary>
/// AsyncLock: the lock contract (<see cref="LockContractTests{TGate, TReleaser}"/>), plus what only a lock has:
/// <c>Release</c> of an unheld lock throws <see cref="SynchronizationLockException"/>, any code may release it (it
/// has no owner), and its <c>ToString</c>.
/// </summary>
public sealed class AsyncLockTests : LockContractTests<AsyncLock, AsyncLock.Releaser>
{
    protected override AsyncLock Create(TimeProvider? timeProvider = null) => new(timeProvider);

    protected override ValueTask<AsyncLock.Releaser> AcquireAsync(AsyncLock gate, CancellationToken cancellationToken = default) =>
        gate.AcquireAsync(cancellationToken);

    protected override ValueTask<AsyncLock.Releaser> AcquireAsync(AsyncLock gate, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        gate.AcquireAsync(timeout, cancellationToken);

    protected override bool TryAcquire(AsyncLock gate) => gate.TryAcquire(out _);

    protected override void Release(AsyncLock gate) => gate.Release();

    protected override bool IsHeld(AsyncLock gate) => gate.IsLocked;

    private protected override WaitLines Lines(AsyncLock gate) => gate.Lines;

    [Fact]
    public void Release_WhenNotHeld_ThrowsSynchronizationLockException()
    {
        var gate = new AsyncLock();

        gate.Invoking(g => g.Release()).Should().Throw<SynchronizationLockException>();

        gate.IsLocked.Should().BeFalse();
        gate.TryAcquire(out AsyncLock.Releaser releaser).Should().BeTrue("a failed release changes nothing");
        gate.TryAcquire(out _).Should().BeFalse("a failed release did not add a second permit");
        releaser.Dispose();
    }

    [Fact]
    public void Release_Twice_SecondThrowsAndTheLockStaysUsable()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();

        gate.Release();
        gate.Invoking(g => g.Release()).Should().Throw<SynchronizationLockException>();

        gate.IsLocked.Should().BeFalse();
        gate.TryAcquire(out AsyncLock.Releaser releaser).Should().BeTrue();
        gate.TryAcquire(out _).Should().BeFalse();
        releaser.Dispose();
    }

    [Fact]
    public async Task Release_ByCodeThatDidNotAcquire_ReleasesTheLock()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();

        await Task.Run(gate.Release).WaitAsync(Bound);

        gate.IsLocked.Should().BeFalse("the lock has no owner: any code may release it");
    }

    [Fact]
    public void Releaser_FromAFailedTryAcquire_IsDefaultAndReleasesNothing()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out _).Should().BeTrue();

        gate.TryAcquire(out AsyncLock.Releaser failed).Should().BeFalse();
        failed.Dispose();

        gate.IsLocked.Should().BeTrue();
    }

    [Fact]
    public void Releaser_DisposedTwice_ThrowsSynchronizationLockException()
    {
        var gate = new AsyncLock();
        gate.TryAcquire(out AsyncLock.Releaser releaser).Should().BeTrue();

        releaser.Dispose();

        releaser.Invoking(r => r.Dispose()).Should().Throw<SynchronizationLockException>();
        gate.IsLocked.Should().BeFalse();
    }

    [Fact]
    public void ToString_ShowsLockStateAndWaiters()
    {
        var gate = new AsyncLock();
        gate.ToString().Should().Be("AsyncLock(unlocked, waiters=0)");

        gate.TryAcquire(out _).Should().BeTrue();
        gate.ToString().Should().Be("AsyncLock(locked, waiters=0)");

        using var cts = new CancellationTokenSource();
        _ = gate.AcquireAsync(cts.Token);
        _ = gate.AcquireAsync(cts.Token);
        gate.ToString().Should().Be("AsyncLock(locked, waiters=2)");

        cts.Cancel();
        gate.ToString().Should().Be("AsyncLock(locked, waiters=0)");
    }

    [Fact]
    public void ToString_WithAName_ShowsItFirst()
    {
        var gate = new AsyncLock { Name = "cache-refresh" };
        gate.Name.Should().Be("cache-refresh");
        gate.TryAcquire(out _).Should().BeTrue();

        gate.ToString().Should().Be("AsyncLock(name=\"cache-refresh\", locked, waiters=0)");
        new AsyncLock().Name.Should().BeNull();
    }
}
