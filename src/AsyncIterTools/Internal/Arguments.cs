namespace AsyncIterTools.Internal;

/// <summary>
/// The bad-input rules of AsyncIterTools that the BCL throw helpers do not cover, written once (docs/asynciter.md,
/// "Shared rules"). A <see langword="null"/> element is an <see cref="ArgumentNullException"/> naming the parameter it
/// came from: an array (<see langword="params"/>) is checked and copied at the call; a sequence is read when the
/// operator runs, and a <see langword="null"/> element fails the operator when it is reached.
/// </summary>
internal static class Arguments
{
    /// <summary>Throws unless a <c>maxConcurrency</c> argument is absent (no limit) or positive.</summary>
    public static void ThrowIfInvalidMaxConcurrency(int? maxConcurrency)
    {
        if (maxConcurrency is { } max)
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(max, nameof(maxConcurrency));
        }
    }

    /// <summary>
    /// Returns a copy of the array argument <paramref name="items"/>, so later changes to the caller's array change
    /// nothing; throws <see cref="NullElement"/> for a <see langword="null"/> element.
    /// </summary>
    public static T[] CopyNonNull<T>(T[] items, string paramName)
        where T : class
    {
        var copy = new T[items.Length];
        for (int i = 0; i < copy.Length; i++)
        {
            copy[i] = items[i] ?? throw NullElement(paramName);
        }

        return copy;
    }

    /// <summary>Returns <paramref name="element"/>, read from the sequence argument <paramref name="paramName"/>, or throws <see cref="NullElement"/>.</summary>
    public static T NotNullElement<T>(T? element, string paramName)
        where T : class =>
        element ?? throw NullElement(paramName);

    /// <summary>The exception for a <see langword="null"/> element of the argument <paramref name="paramName"/>.</summary>
    public static ArgumentNullException NullElement(string paramName) =>
        new(paramName, $"The sequence '{paramName}' contains a null element.");
}
