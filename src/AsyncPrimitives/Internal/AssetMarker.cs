namespace AsyncPrimitives.Internal;

/// <summary>A type tests use to find this assembly and check which target framework asset they loaded.</summary>
internal static class AssetMarker
{
}
