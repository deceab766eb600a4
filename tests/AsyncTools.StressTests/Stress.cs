using System.Globalization;
using Xunit.Abstractions;

namespace AsyncTools.StressTests;

/// <summary>
/// Settings and helpers shared by the stress tests.
/// </summary>
/// <remarks>
/// <para><c>ASYNCTOOLS_STRESS_SCALE</c> (default 1) multiplies the number of rounds each stress test runs; CI uses
/// the default, which keeps this project well under two minutes per library asset on two cores. Run
/// <c>ASYNCTOOLS_STRESS_SCALE=50 dotnet test tests/AsyncTools.StressTests</c> to soak locally.</para>
/// <para><c>ASYNCTOOLS_STRESS_SEED</c> fixes the seed of round 0 (round <c>i</c> uses seed + i). Every test prints its
/// seed and every assertion message carries the round's seed, so <c>ASYNCTOOLS_STRESS_SEED=&lt;seed&gt;</c> replays
/// the failing round's random decisions first (thread interleavings still vary from run to run).</para>
/// </remarks>
internal static class Stress
{
    /// <summary>The bound on every await that would hang if the code under test had a bug.</summary>
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    /// <summary>Rounds multiplier from <c>ASYNCTOOLS_STRESS_SCALE</c> (at least 1).</summary>
    public static int Scale { get; } = ReadInt("ASYNCTOOLS_STRESS_SCALE") is { } s && s > 0 ? s : 1;

    /// <summary>The fixed seed from <c>ASYNCTOOLS_STRESS_SEED</c>, if any.</summary>
    public static int? FixedSeed { get; } = ReadInt("ASYNCTOOLS_STRESS_SEED");

    /// <summary>Picks the base seed (fixed or fresh) and prints it.</summary>
    public static int Seed(ITestOutputHelper output, string test)
    {
        int seed = FixedSeed ?? Random.Shared.Next(1, int.MaxValue / 2);
        output.WriteLine($"{test}: seed={seed} scale={Scale} (reproduce with ASYNCTOOLS_STRESS_SEED={seed})");
        return seed;
    }

    /// <summary>Runs <paramref name="rounds"/> × <see cref="Scale"/> rounds, round i with seed + i; a failure names its seed.</summary>
    public static async Task RoundsAsync(ITestOutputHelper output, string test, int rounds, Func<Random, string, Task> round)
    {
        int seed = Seed(output, test);
        int total = rounds * Scale;
        for (int i = 0; i < total; i++)
        {
            int roundSeed = seed + i;
            string because = $"{test} round {i} (seed={roundSeed}, reproduce with ASYNCTOOLS_STRESS_SEED={roundSeed})";
            try
            {
                await round(new Random(roundSeed), because).WaitAsync(Bound);
            }
            catch (Exception ex) when (ex is not Xunit.Sdk.XunitException)
            {
                throw new Xunit.Sdk.XunitException($"{because} failed: {ex}");
            }
        }

        output.WriteLine($"{test}: {total} rounds passed");
    }

    /// <summary>Awaits <paramref name="task"/>, failing (not hanging) after <see cref="Bound"/>.</summary>
    public static Task Bounded(this Task task) => task.WaitAsync(Bound);

    /// <summary>Awaits <paramref name="task"/>, failing (not hanging) after <see cref="Bound"/>.</summary>
    public static Task<T> Bounded<T>(this Task<T> task) => task.WaitAsync(Bound);

    private static int? ReadInt(string name) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) ? value : null;
}

/// <summary>An atomic "how many are inside" counter that remembers its peak.</summary>
internal sealed class Occupancy
{
    private int _inside;
    private int _peak;

    public int Inside => Volatile.Read(ref _inside);

    public int Peak => Volatile.Read(ref _peak);

    /// <summary>Enters; returns how many are inside now (including this one).</summary>
    public int Enter()
    {
        int now = Interlocked.Increment(ref _inside);
        AsyncTools.Testing.Peak.Raise(ref _peak, now); // qualified: this class has a Peak property
        return now;
    }

    public void Exit() => Interlocked.Decrement(ref _inside);
}
