namespace AsyncIterTools.Tests;

public sealed class PublicApiTests
{
    [Fact]
    public void PublicApi_MatchesApprovedFile() => PublicApi.Verify(typeof(AsyncIter).Assembly);
}
