namespace AsyncPrimitives.Internal;

/// <summary>
/// What a primitive tells the wait engine: when a caller who arrives can be served at once, and what a waiter's
/// departure unblocks. Implemented by a small <c>readonly struct</c> nested in each primitive (so the engine's calls
/// are direct and inlined, and no public type implements an internal interface). Everything else about waiting
/// (cancellation, timeouts, FIFO order, pooling, delivery after the lock) is the engine's.
/// </summary>
/// <typeparam name="T">What a wait hands the waiter (a releaser, an item), and what a waiter may carry while it waits.</typeparam>
internal interface IWaitPolicy<T>
{
    /// <summary>
    /// Whether <see cref="TryAcquire"/> may also be called without the lock, first, as a lock-free fast path (the
    /// permit count of a lock or semaphore, a set event or result). A constant: the JIT drops the fast path of a
    /// policy that says no.
    /// </summary>
    bool HasLockFreePath { get; }

    /// <summary>
    /// Under the lock, when nobody waits ahead of the caller: serves it now (true, with <paramref name="result"/>),
    /// or says it cannot be served now (false). Waiters this call serves in turn (a put handing its item to a waiting
    /// getter) go into <paramref name="completions"/>. A false return changes nothing, except that a lock-free policy
    /// told <paramref name="willWait"/> closes its fast path, because the caller is about to join the line. A policy
    /// with <see cref="HasLockFreePath"/> is also called without the lock (with <paramref name="willWait"/> false),
    /// and must then not succeed while anyone waits.
    /// </summary>
    /// <param name="offer">What the caller brings: a putter's item, the releaser a reader-writer waiter asks for.</param>
    /// <param name="willWait">Whether the caller joins the line if this fails (false for a zero timeout or a Try form).</param>
    /// <param name="completions">Other waiters served by this call, completed after the lock.</param>
    /// <param name="result">What the caller gets.</param>
    bool TryAcquire(T offer, bool willWait, ref Completions<T> completions, out T result);

    /// <summary>Under the lock, after <see cref="TryAcquire"/> failed: an error that fails the caller now instead
    /// of letting it wait (a shut-down queue, a result set with an exception), or null.</summary>
    Exception? Refusal();

    /// <summary>
    /// Under the lock, right after a waiter left the line by timeout or cancellation, or after a caller that
    /// <see cref="TryAcquire"/> was told would wait was cancelled before it joined: serve whoever that unblocked (a
    /// writer that gave up may have been holding back readers), or reopen a fast path.
    /// </summary>
    void OnWaiterLeft(ref Completions<T> completions);
}
