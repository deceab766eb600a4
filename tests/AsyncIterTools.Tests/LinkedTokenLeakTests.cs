using System.Reflection;
using System.Runtime.CompilerServices;

namespace AsyncIterTools.Tests;

/// <summary>
/// Every concurrent operator links the caller's token into a token source of its own, which registers a callback on
/// the caller's token. Services pass long-lived tokens (a host's stopping token) to millions of calls, so each
/// operator must dispose its linked source when it ends, or every call would leave a registration (and everything it
/// references) on the caller's source for as long as that lives. Counted directly on the caller's source.
/// </summary>
public sealed class LinkedTokenLeakTests
{
    private const BindingFlags Private = BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public;

    private static readonly FieldInfo s_registrations = typeof(CancellationTokenSource).GetField("_registrations", Private)
        ?? throw new InvalidOperationException("CancellationTokenSource._registrations not found: update this test for the runtime.");

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
    public async Task WhenTheOperatorEnds_NoRegistrationIsLeftOnTheCallersToken(string op, bool breakEarly)
    {
        using var longLived = new CancellationTokenSource(); // never cancelled, outlives the operator
        int seen = 0;
        await RunAsync(op, breakEarly, longLived.Token, () => Interlocked.Increment(ref seen));

        seen.Should().BeGreaterThan(0, "the work or the source was given a token");
        Registrations(longLived).Should().Be(0, "the operator's linked token source must be disposed (unregistered) when it ends");
    }

    /// <summary>Callbacks registered on <paramref name="source"/> right now (read from the runtime's private fields).</summary>
    private static int Registrations(CancellationTokenSource source)
    {
        object? registrations = s_registrations.GetValue(source);
        if (registrations is null)
        {
            return 0;
        }

        FieldInfo callbacks = registrations.GetType().GetField("Callbacks", Private)
            ?? throw new InvalidOperationException("Registrations.Callbacks not found: update this test for the runtime.");
        int count = 0;
        for (object? node = callbacks.GetValue(registrations); node is not null; node = node.GetType().GetField("Next", Private)!.GetValue(node))
        {
            count++;
        }

        return count;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task RunAsync(string op, bool breakEarly, CancellationToken token, Action seen)
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

    private static IEnumerable<Func<CancellationToken, Task<int>>> Work(Action seen, CancellationToken callerToken) =>
        Enumerable.Range(0, 5).Select(i => (Func<CancellationToken, Task<int>>)(ct => Task.FromResult(Capture(seen, ct, callerToken, i))));

    private static async IAsyncEnumerable<int> Source(Action seen, CancellationToken callerToken, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        Capture(seen, cancellationToken, callerToken, 0);
        for (int i = 0; i < 5; i++)
        {
            yield return i;
        }

        await Task.CompletedTask;
    }

    /// <summary>Checks that <paramref name="given"/> is the operator's own token, not the caller's, and counts it.</summary>
    private static int Capture(Action seen, CancellationToken given, CancellationToken callerToken, int value)
    {
        given.Should().NotBe(callerToken, "the operator links the caller's token into a source of its own");
        given.CanBeCanceled.Should().BeTrue();
        seen();
        return value;
    }
}
