using System.Globalization;

namespace AsyncPrimitives.Internal;

/// <summary>The one format every primitive's <c>ToString()</c> follows: <c>Kind(name="x", state...)</c>.</summary>
internal static class Display
{
    /// <summary>
    /// <c>Kind(name="x", state)</c>, or <c>Kind(state)</c> when <paramref name="name"/> is null: the state the way
    /// Toro's <c>__str__</c> showed it, after the name the primitive was given.
    /// </summary>
    public static string Format(string kind, string? name, string state) =>
        name is null
            ? string.Concat(kind, "(", state, ")")
            : string.Format(CultureInfo.InvariantCulture, "{0}(name=\"{1}\", {2})", kind, name, state);
}
