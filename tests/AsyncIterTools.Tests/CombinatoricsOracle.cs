namespace AsyncIterTools.Tests;

/// <summary>
/// Brute-force oracles for Permutations/Combinations/CombinationsWithReplacement: every index tuple of the given
/// length in lexicographic order, filtered by a rule. Python documents its combinatoric iterators as exactly
/// these filters of <c>product(range(n), repeat=r)</c>.
/// </summary>
public static class CombinatoricsOracle
{
    public static int[][] IndexTuples(int n, int r, Func<int[], bool> keep)
    {
        var result = new List<int[]>();
        var current = new int[r];
        void Fill(int position)
        {
            if (position == r)
            {
                if (keep(current))
                {
                    result.Add((int[])current.Clone());
                }

                return;
            }

            for (int i = 0; i < n; i++)
            {
                current[position] = i;
                Fill(position + 1);
            }
        }

        Fill(0);
        return [.. result];
    }

    public static bool AllDistinct(int[] t) => t.Distinct().Count() == t.Length;

    public static bool StrictlyIncreasing(int[] t) => t.Zip(t.Skip(1)).All(p => p.First < p.Second);

    public static bool NonDecreasing(int[] t) => t.Zip(t.Skip(1)).All(p => p.First <= p.Second);
}
