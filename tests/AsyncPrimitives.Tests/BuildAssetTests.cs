using System.Reflection;

namespace AsyncPrimitives.Tests;

public sealed class BuildAssetTests
{
    [Fact]
    public void Library_UnderTest_IsTheRequestedAsset()
    {
        string expected = Environment.GetEnvironmentVariable("ASYNCTOOLS_EXPECT_ASSET") ?? "";
        string? framework = typeof(AsyncPrimitives.Internal.AssetMarker).Assembly
            .GetCustomAttribute<System.Runtime.Versioning.TargetFrameworkAttribute>()?.FrameworkName;
        framework.Should().NotBeNull();
        if (expected.Length > 0)
        {
            framework.Should().Contain(expected);
        }
    }
}
