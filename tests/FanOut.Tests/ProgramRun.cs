using System.Diagnostics;
using System.Globalization;

namespace FanOut.Tests;

/// <summary>The sample run as a user runs it: its own OS process, its output read, POSIX signals sent with kill(1).</summary>
internal static class ProgramRun
{
    /// <summary>Starts the sample with <paramref name="arguments"/>, its standard output and error redirected.</summary>
    public static Process Start(params string[] arguments)
    {
        WorkerCommand program = WorkerCommand.ThisSample();
        var start = new ProcessStartInfo(program.FileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in program.Arguments.Concat(arguments))
        {
            start.ArgumentList.Add(argument);
        }

        return Process.Start(start)!;
    }

    /// <summary>Reads the rest of the output until the process exits, within <paramref name="bound"/> (then kills it).</summary>
    public static async Task<(string Output, string Errors)> ReadToEndAsync(Process run, TimeSpan bound)
    {
        using var reading = new CancellationTokenSource(bound);
        Task<string> output = run.StandardOutput.ReadToEndAsync(reading.Token);
        Task<string> errors = run.StandardError.ReadToEndAsync(reading.Token);
        try
        {
            await run.WaitForExitAsync(reading.Token);
            return (await output, await errors);
        }
        finally
        {
            if (!run.HasExited)
            {
                run.Kill(entireProcessTree: true);
            }
        }
    }

    /// <summary>Sends <paramref name="signal"/> (<c>-TERM</c>, <c>-INT</c>, ...) to <paramref name="pid"/>.</summary>
    public static async Task SendSignalAsync(int pid, string signal, TimeSpan bound)
    {
        using Process kill = Process.Start("kill", [signal, pid.ToString(CultureInfo.InvariantCulture)]);
        await kill.WaitForExitAsync().WaitAsync(bound);
    }
}
