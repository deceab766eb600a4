namespace AsyncTools.Testing;

/// <summary>The high-water mark of a counter that several threads move at once.</summary>
internal static class Peak
{
    /// <summary>Raises <paramref name="peak"/> to <paramref name="value"/> if that is higher, atomically.</summary>
    public static void Raise(ref int peak, int value)
    {
        int seen = Volatile.Read(ref peak);
        while (value > seen)
        {
            int previous = Interlocked.CompareExchange(ref peak, value, seen);
            if (previous == seen)
            {
                return;
            }

            seen = previous;
        }
    }
}
