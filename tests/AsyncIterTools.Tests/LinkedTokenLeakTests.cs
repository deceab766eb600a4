using System.Reflection;
using System.Runtime.CompilerServices;

namespace AsyncIterTools.Tests;

/// <summary>
/// Every concurrent operator links the caller's token into a token source of its own, which registers a callback on
/// the caller's token. Services pass long-lived tokens (a host's stopping token) to millions of calls, so each
/// operator must dispose its linked source when it ends, or every call would leave a registration behind, reachable
/// for as long as the caller's source lives.
/// </summary>
public sealed class LinkedTokenLeakTests
{
    private static readonly FieldInfo s_tokenSource = typeof(CancellationToken).GetField("_source", BindingFlags.Instance | BindingFlags.NonPublic)
        ?? throw new InvalidOperationException("CancellationToken._source not found: this test needs updating for the runtime.");

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
    public async Task WhenTheOperatorEnds_ItsLinkedTokenSourceIsReleasedFromTheCallersToken(string op, bool breakEarly)
    {
        using var longLived = new CancellationTokenSource(); // never cancelled, outlives the operator
        var seen = new List<WeakReference>();
        await RunAsync(op, breakEarly, longLived.Token, seen);

        seen.Should().NotBeEmpty("the work or the source was given a token");
        await Task.Yield(); // collect on a fresh stack
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        seen.Should().OnlyContain(w => !w.IsAlive, "a linked token source still registered on the caller's token stays reachable from it");
        GC.KeepAlive(longLived);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task RunAsync(string op, bool breakEarly, CancellationToken token, List<WeakReference> seen)
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

    private static IEnumerable<Func<CancellationToken, Task<int>>> Work(List<WeakReference> seen, CancellationToken callerToken) =>
        Enumerable.Range(0, 5).Select(i => (Func<CancellationToken, Task<int>>)(ct => Task.FromResult(Capture(seen, ct, callerToken, i))));

    private static async IAsyncEnumerable<int> Source(List<WeakReference> seen, CancellationToken callerToken, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        Capture(seen, cancellationToken, callerToken, 0);
        for (int i = 0; i < 5; i++)
        {
            yield return i;
        }

        await Task.CompletedTask;
    }

    /// <summary>Records (weakly) the token source behind <paramref name="given"/>, which must be the operator's own.</summary>
    private static int Capture(List<WeakReference> seen, CancellationToken given, CancellationToken callerToken, int value)
    {
        given.Should().NotBe(callerToken, "the operator links the caller's token into a source of its own");
        object source = s_tokenSource.GetValue(given) ?? throw new InvalidOperationException("The operator gave an uncancellable token.");
        lock (seen)
        {
            seen.Add(new WeakReference(source));
        }

        return value;
    }
}
