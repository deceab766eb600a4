using System.Runtime.InteropServices;

namespace FanOut;

/// <summary>
/// Turns Ctrl+C (SIGINT) and SIGTERM into the cancellation of <see cref="Token"/>, so that the program stops the way it
/// does at the end of a run: the scale-out instances killed, the throwaway server stopped, the report or a line saying
/// what was stopped. A second signal gets the default handling, which ends the process at once.
/// </summary>
internal sealed class StopSignals : IDisposable
{
    private readonly CancellationTokenSource _stop;
    private readonly PosixSignalRegistration[] _registrations;

    /// <summary>The signal that stopped the run; null until one did.</summary>
    private volatile string? _signal;

    public StopSignals(CancellationToken cancellationToken)
    {
        _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _registrations =
        [
            PosixSignalRegistration.Create(PosixSignal.SIGINT, context => OnSignal(context, "Ctrl+C")),
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => OnSignal(context, "SIGTERM")),
        ];
    }

    /// <summary>Cancelled by the first signal, or by the token the program was given.</summary>
    public CancellationToken Token => _stop.Token;

    /// <summary>What stopped the run, for the line that says so.</summary>
    public string Reason => _signal ?? "Ctrl+C";

    /// <summary>The exit code of a stopped run: 128 + the signal's number, as shells report it (130 for Ctrl+C, 143 for SIGTERM).</summary>
    public int ExitCode => _signal == "SIGTERM" ? 143 : 130;

    public void Dispose()
    {
        foreach (PosixSignalRegistration registration in _registrations)
        {
            registration.Dispose();
        }

        _stop.Dispose();
    }

    private void OnSignal(PosixSignalContext context, string signal)
    {
        if (_stop.IsCancellationRequested)
        {
            return; // the second one: the default handling ends the process
        }

        context.Cancel = true;
        _signal = signal;
        _stop.Cancel();
    }
}
