namespace AsyncIterTools;

/// <summary>
/// itertools for <see cref="IAsyncEnumerable{T}"/>: a port of Python's <c>aioitertools</c> (and the most useful
/// <c>more_itertools</c> recipes), plus bounded-concurrency execution. It complements
/// <c>System.Linq.AsyncEnumerable</c> and never reuses its operator names, so both can be imported together.
/// </summary>
/// <remarks>
/// <para>
/// <b>Deferred execution.</b> Every operator that returns an <see cref="IAsyncEnumerable{T}"/> is lazy: calling it
/// reads nothing; the sources are enumerated only when the result is enumerated, and again each time it is
/// enumerated (unless an operator documents that it shares one enumeration, as
/// <see cref="BeforeAndAfter{T}(IAsyncEnumerable{T}, Func{T, bool})"/> does).
/// </para>
/// <para>
/// <b>Argument validation happens at the call.</b> A null argument throws <see cref="ArgumentNullException"/> and an
/// out-of-range value throws <see cref="ArgumentOutOfRangeException"/>, both naming the parameter, when the
/// operator is called, not when its result is first enumerated. A null element is an
/// <see cref="ArgumentNullException"/> naming its parameter too: at the call for an array (which is copied then), and
/// when it is reached for a sequence, which is read only as the operator runs.
/// </para>
/// <para>
/// <b>Cancellation.</b> Lazy operators take no <see cref="CancellationToken"/>. Pass one when enumerating, with
/// <c>WithCancellation(token)</c> or <c>GetAsyncEnumerator(token)</c>; it flows to every source the operator
/// enumerates, and operators that produce items without awaiting a source (such as <c>Count</c>, <c>Repeat</c>,
/// <c>Cycle</c> replay, <c>Permutations</c>) check it before each item. Cancellation surfaces as
/// <see cref="OperationCanceledException"/>.
/// </para>
/// <para>
/// <b>Disposal.</b> Every enumerator an operator opens on a source is disposed, with <c>await using</c>, exactly
/// once: when the source is exhausted or no longer needed, when the consumer stops early (<c>break</c>), and when a
/// source, a callback, or cancellation throws.
/// </para>
/// <para>
/// <b>Threading.</b> Operators do not use <c>ConfigureAwait(false)</c> where they call user code (callbacks, a source's
/// <c>MoveNextAsync</c>), which may depend on the caller's <see cref="SynchronizationContext"/>; this matches
/// <c>System.Linq.AsyncEnumerable</c>. Their internal bookkeeping (recording that a concurrent call completed) never
/// posts to that context.
/// </para>
/// </remarks>
public static partial class AsyncIter
{
}
