using System.Diagnostics;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A manual-reset event for asynchronous code (Toro's <c>Event</c>, <c>tornado.locks.Event</c>, <c>asyncio.Event</c>):
/// waiters wait until it is set; it stays set until <see cref="Clear"/>.
/// </summary>
/// <remarks>
/// <para><b>Semantics.</b> <see cref="Set"/> completes every current waiter; later waits complete at once until
/// <see cref="Clear"/>. A waiter registered before a <see cref="Clear"/> is still completed by the next
/// <see cref="Set"/> (and one that was already completed by an earlier <see cref="Set"/> stays completed).</para>
/// <para><b>Cancellation and timeouts.</b> A token that is already cancelled fails the wait at once, even if the event
/// is set. A timed-out wait throws <see cref="TimeoutException"/>, a cancelled one <see cref="OperationCanceledException"/>,
/// and leaves no waiter behind.</para>
/// <para><b>Continuations.</b> <see cref="Set"/> never runs a waiter's continuation inline. Waiting on a set event
/// allocates nothing.</para>
/// </remarks>
/// <example>
/// <code>
/// var ready = new AsyncEvent();
/// Task consumer = Task.Run(async () => { await ready.WaitAsync(); /* go */ });
/// ready.Set();
/// </code>
/// </example>
[DebuggerDisplay("Name = {Name}, IsSet = {IsSet}, Waiters = {_waiters.Count}")]
public sealed class AsyncEvent
{
    private readonly Lock _sync = new();

    /// <summary>Callers waiting for the event to be set; empty whenever <see cref="_isSet"/> is true.</summary>
    private readonly WaitQueue<bool, Policy> _waiters;

    /// <summary>
    /// The event's state, read without the lock on the fast path. Made true only under <see cref="_sync"/>, by a
    /// <see cref="Set"/> that serves the whole line in the same section; made false by <see cref="Clear"/> without it.
    /// A caller joins the line only after reading false under the lock, so the line is empty whenever this is true.
    /// </summary>
    private volatile bool _isSet;

    /// <summary>Creates an event.</summary>
    /// <param name="initialState">Whether the event starts set.</param>
    /// <param name="timeProvider">The clock for timeouts; <see cref="TimeProvider.System"/> when null.</param>
    public AsyncEvent(bool initialState = false, TimeProvider? timeProvider = null)
    {
        _isSet = initialState;
        _waiters = new WaitQueue<bool, Policy>("AsyncEvent", new Policy(this), _sync, timeProvider ?? TimeProvider.System);
    }

    /// <summary>
    /// A name for diagnostics (<c>new AsyncEvent { Name = "warmed-up" }</c>): shown by <see cref="ToString"/> and
    /// the <c>asynctools.name</c> tag of its metrics; null (the default) for none.
    /// </summary>
    public string? Name
    {
        get => _waiters.Name;
        init => _waiters.Name = value;
    }

    /// <summary>Whether the event is set (a snapshot).</summary>
    public bool IsSet => _isSet;

    /// <summary>The line of waiters, for tests.</summary>
    internal WaitLines Lines => new(_waiters);

    /// <summary>Sets the event, completing every waiter. Setting a set event does nothing.</summary>
    public void Set()
    {
        var completions = default(Completions<bool>);
        lock (_sync)
        {
            if (_isSet)
            {
                return;
            }

            _isSet = true;
            _waiters.ServeAll(true, ref completions);
        }

        completions.CompleteAll();
    }

    /// <summary>Resets the event, so later waits wait for the next <see cref="Set"/>.</summary>
    public void Clear() =>
        // One write, no lock: a Set racing it has served everyone in its line before it leaves the lock, and a waiter
        // arriving after it reads false (under the lock, if it has to join the line) and waits for the next Set.
        _isSet = false;

    /// <summary>Waits until the event is set.</summary>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when the event is set.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first.</exception>
    public ValueTask WaitAsync(CancellationToken cancellationToken = default) =>
        _waiters.WaitWithoutResultAsync(new Policy(this), false, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Waits at most <paramref name="timeout"/> until the event is set.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/> to check now.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task that completes when the event is set.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The event was not set within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first.</exception>
    public ValueTask WaitAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return _waiters.WaitWithoutResultAsync(new Policy(this), false, timeout, cancellationToken);
    }

    /// <summary>Describes the state, like Toro's <c>__str__</c>: <c>AsyncEvent(set, waiters=0)</c>; with a
    /// <see cref="Name"/> it comes first: <c>AsyncEvent(name="warmed-up", set, waiters=0)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString() => Display.Format("AsyncEvent", Name, $"{(IsSet ? "set" : "clear")}, waiters={_waiters.Count}");

    // doc: engine-policy
    /// <summary>The engine's view: a caller is served when the event is set, with or without the lock.</summary>
    private readonly struct Policy(AsyncEvent owner) : IWaitPolicy<bool>
    {
        public bool HasLockFreePath => true;

        public bool TryAcquire(bool offer, bool willWait, ref Completions<bool> completions, out bool result) => result = owner._isSet;

        public Exception? Refusal() => null;

        public void OnWaiterLeft(ref Completions<bool> completions)
        {
        }
    }
    // end doc
}
