namespace AsyncPrimitives.Tests.Support;

/// <summary>Reading an awaited failure's stack trace.</summary>
internal static class Traces
{
    /// <summary>
    /// How many earlier throws the trace of <paramref name="exception"/> carries (its "End of stack trace from previous
    /// location" markers). An exception shared by many waiters and rethrown from one capture shows each of them the same
    /// count; one captured again at every throw shows each waiter the throws of the waiters before it.
    /// </summary>
    public static int Rethrows(Exception exception) =>
        exception.StackTrace is { } trace ? trace.Split("--- End of stack trace from previous location ---").Length - 1 : 0;
}
