using AsyncIterTools.Internal;

namespace AsyncIterTools.Tests.Internal;

/// <summary>
/// <see cref="Deadline"/>, white-box (through <c>InternalsVisibleTo</c>): a timed <c>Batch</c> makes one per batch,
/// linked to the caller's token, and what it leaves on that token (a long-lived one: a host's stopping token) cannot be
/// seen from the operator's public surface.
/// </summary>
public sealed class DeadlineTests
{
    [Fact]
    public void TheLinkedTokensCancellation_CancelsTheToken_WithoutExpiringTheDeadline()
    {
        using var caller = new CancellationTokenSource();
        using var deadline = new Deadline(TimeSpan.FromSeconds(5), new FakeTimeProvider(), linkedToken: caller.Token);

        caller.Cancel();

        deadline.Token.IsCancellationRequested.Should().BeTrue();
        deadline.IsExpired.Should().BeFalse("only the time passing expires it");
    }

    [Fact]
    public void TheTimePassing_ExpiresTheDeadline_AndCancelsTheToken()
    {
        var time = new FakeTimeProvider();
        using var deadline = new Deadline(TimeSpan.FromSeconds(5), time);

        time.Advance(TimeSpan.FromSeconds(4));
        deadline.Token.IsCancellationRequested.Should().BeFalse();
        time.Advance(TimeSpan.FromSeconds(1));

        deadline.IsExpired.Should().BeTrue();
        deadline.Token.IsCancellationRequested.Should().BeTrue();
    }

    [Fact]
    public void Disposed_ItsTokenSourceIsDisposed_SoNothingOfItStaysOnTheLinkedToken()
    {
        using var longLived = new CancellationTokenSource();
        var time = new CountingTimeProvider();
        var deadline = new Deadline(TimeSpan.FromSeconds(5), time, linkedToken: longLived.Token);
        CancellationToken token = deadline.Token;

        deadline.Dispose();

        // Disposing a linked source unregisters it from the token it was linked to; a disposed source's WaitHandle throws.
        FluentActions.Invoking(() => token.WaitHandle).Should().Throw<ObjectDisposedException>();
        time.ActiveTimers.Should().Be(0, "its timer is disposed too");
    }
}
