using System.Diagnostics;

namespace FanOut.Tests;

/// <summary>The program's <c>--help</c>, as a user reads it: each option's default is the one the program uses.</summary>
public sealed class ProgramHelpTests
{
    private static readonly TimeSpan s_bound = TimeSpan.FromMinutes(1);

    [Fact]
    public async Task Help_GlobalLimit_ShowsNoFixedDefault_ItFollowsLimit()
    {
        string help = await RunAsync("--help");

        string line = help.Split('\n').Single(l => l.TrimStart().StartsWith("--global-limit", StringComparison.Ordinal));
        line.Should().Contain("(default: --limit; 0 for none)")
            .And.NotContain("[default:", "the global limit follows --limit unless given, so no fixed number is its default");
        help.Split('\n').Single(l => l.TrimStart().StartsWith("--limit", StringComparison.Ordinal))
            .Should().Contain("[default: 64]", "a fixed default is still shown where there is one");
    }

    private static async Task<string> RunAsync(params string[] arguments)
    {
        using Process run = ProgramRun.Start(arguments);
        (string output, string errors) = await ProgramRun.ReadToEndAsync(run, s_bound);
        run.ExitCode.Should().Be(0, errors);
        return output;
    }
}
