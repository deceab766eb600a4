namespace FanOut.Tests;

/// <summary>The demo's plain output lines (as printed when the output is redirected), written to a <see cref="StringWriter"/>.</summary>
public sealed class ConsoleOutputTests
{
    [Fact]
    public void WriteScaleOutProgress_WhenResultsWereRecordedTwice_CountsEachRequestOnce_NeverPastTheTotal()
    {
        using var text = new StringWriter();
        var output = new ConsoleOutput(text);

        // After a kill: 600 requests recorded, 6 of them twice (recorded by the killed instance and again by another).
        output.WriteScaleOutProgress(new ScaleOutProgress(TimeSpan.FromSeconds(12.5), 600, 600, [300, 206, 100], null), serverInFlight: 0);

        string line = text.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().ContainSingle().Subject.TrimEnd();
        line.Should().Contain("600/600 recorded", "the progress counts requests recorded, each once")
            .And.Contain("(#1 300, #2 206, #3 100)", "each instance's own count includes what it recorded again");
    }
}
