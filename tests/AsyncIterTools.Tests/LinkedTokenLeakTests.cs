using System.Runtime.CompilerServices;

namespace AsyncIterTools.Tests;

/// <summary>
/// Every concurrent operator links the caller's token into a token source of its own, which registers a callback on
/// the caller's token. Services pass long-lived tokens (a host's stopping token) to millions of calls, so each
/// operator must dispose its linked source when it ends (disposing a linked source unregisters it), or every call
/// would leave a registration (and everything it references) on the caller's source for as long as that lives.
/// Checked through the public surface on every token the operator handed out: by the time the operator has ended, the
/// token's source is disposed (its <see cref="CancellationToken.WaitHandle"/> throws <see cref="ObjectDisposedException"/>),
/// or it was never linked to the caller's token (cancelling the caller's source does not cancel it).
/// </summary>
public sealed class LinkedTokenLeakTests
{
    public static TheoryData<string, bool> Cases()
    {
        var data = new TheoryData<string, bool>();
        foreach (string op in new[] { "GatherAsync", "GatherSettledAsync", "AsCompleted", "Map", "MapUnordered", "Merge", "Prefetch", "BatchTimed", "Tee" })
        {
            data.Add(op, false);
            data.Add(op, true);
        }

        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public async Task WhenTheOperatorEnds_EveryTokenItHandedOutIsUnlinkedFromTheCallersToken(string op, bool breakEarly)
    {
        using var longLived = new CancellationTokenSource(); // outlives the operator
        var given = new List<CancellationToken>();
        await RunAsync(op, breakEarly, longLived.Token, token =>
        {
            lock (given)
            {
                given.Add(token);
            }
        });

        given.Should().NotBeEmpty("the work or the source was given a token");
        longLived.Cancel();
        given.Should().OnlyContain(
            token => IsSourceDisposed(token) || !token.IsCancellationRequested,
            "the operator's linked token source must be disposed (so unregistered from the caller's token) when it ends");
    }

    /// <summary>Whether <paramref name="token"/>'s source has been disposed (documented: its WaitHandle then throws).</summary>
    private static bool IsSourceDisposed(CancellationToken token)
    {
        try
        {
            _ = token.WaitHandle;
            return false;
        }
        catch (ObjectDisposedException)
        {
            return true;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task RunAsync(string op, bool breakEarly, CancellationToken token, Action<CancellationToken> seen)
    {
        switch (op)
        {
            case "GatherAsync":
                await AsyncIter.GatherAsync(Work(seen, token), 2, token);
                return;
            case "GatherSettledAsync":
                await AsyncIter.GatherSettledAsync(Work(seen, token), 2, token);
                return;
        }

        IAsyncEnumerable<int> sequence = op switch
        {
            "AsCompleted" => AsyncIter.AsCompleted(Work(seen, token), 2),
            "Map" => Sources.From(Enumerable.Range(0, 5)).Map((x, ct) => new ValueTask<int>(Capture(seen, ct, token, x)), 2),
            "MapUnordered" => Sources.From(Enumerable.Range(0, 5)).MapUnordered((x, ct) => new ValueTask<int>(Capture(seen, ct, token, x)), 2),
            "Merge" => AsyncIter.Merge(Source(seen, token), Source(seen, token)),
            "Prefetch" => Source(seen, token).Prefetch(2),
            "BatchTimed" => Source(seen, token).Batch(2, TimeSpan.FromHours(1)).Select(b => b[0]),
            "Tee" => Source(seen, token).Tee(2)[0],
            _ => throw new ArgumentOutOfRangeException(nameof(op)),
        };

        await foreach (int _ in sequence.WithCancellation(token))
        {
            if (breakEarly)
            {
                break;
            }
        }
    }

    private static IEnumerable<Func<CancellationToken, Task<int>>> Work(Action<CancellationToken> seen, CancellationToken callerToken) =>
        Enumerable.Range(0, 5).Select(i => (Func<CancellationToken, Task<int>>)(ct => Task.FromResult(Capture(seen, ct, callerToken, i))));

    private static async IAsyncEnumerable<int> Source(Action<CancellationToken> seen, CancellationToken callerToken, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        Capture(seen, cancellationToken, callerToken, 0);
        for (int i = 0; i < 5; i++)
        {
            yield return i;
        }

        await Task.CompletedTask;
    }

    /// <summary>Checks that <paramref name="given"/> is the operator's own token, not the caller's, and records it.</summary>
    private static int Capture(Action<CancellationToken> seen, CancellationToken given, CancellationToken callerToken, int value)
    {
        given.Should().NotBe(callerToken, "the operator links the caller's token into a source of its own");
        given.CanBeCanceled.Should().BeTrue();
        seen(given);
        return value;
    }
}
