using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.ExceptionServices;
using AsyncPrimitives.Internal;

namespace AsyncPrimitives;

/// <summary>
/// A one-shot value that many callers can wait for (Toro's <c>AsyncResult</c>): set once with a value or an
/// exception, after which every current and future <see cref="GetAsync(CancellationToken)"/> returns it.
/// </summary>
/// <typeparam name="T">The type of the value.</typeparam>
/// <remarks>
/// <para><b>Semantics.</b> The first <see cref="Set"/>, <see cref="TrySet"/>, <see cref="SetException"/> or
/// <see cref="TrySetException"/> wins; <see cref="Set"/> and <see cref="SetException"/> after that throw
/// <see cref="InvalidOperationException"/> (Toro's <c>AlreadySet</c>). A failed result rethrows its exception to
/// every getter.</para>
/// <para><b>Cancellation and timeouts.</b> A token that is already cancelled fails the wait at once. A timed-out
/// wait throws <see cref="TimeoutException"/>, a cancelled one <see cref="OperationCanceledException"/>; neither
/// affects the result or other waiters.</para>
/// <para><b>Continuations.</b> Setting the result never runs a waiter's continuation inline. Getting a set result
/// allocates nothing.</para>
/// </remarks>
/// <example>
/// <code>
/// var answer = new AsyncResult&lt;int&gt;();
/// Task&lt;int&gt; reader = answer.GetAsync().AsTask();
/// answer.Set(42);
/// int value = await reader; // 42
/// </code>
/// </example>
[DebuggerDisplay("Name = {Name}, IsSet = {IsSet}, Waiters = {_waiters.Count}")]
public sealed class AsyncResult<T>
{
    private readonly Lock _sync = new();

    /// <summary>Callers waiting for the result; empty once it is set.</summary>
    private readonly WaitQueue<T, Policy> _waiters;

    /// <summary>The value, valid once <see cref="_isSet"/> is true and <see cref="_faulted"/> is null.</summary>
    private T _value = default!;

    /// <summary>The failure, if the result was set with an exception, as one faulted task made when it was set: a get
    /// after the failure returns it, and <see cref="TryGet"/> throws from it, so every getter rethrows the exception as it
    /// was set plus its own frames, never another getter's (waiters already in line rethrow it from one capture too).</summary>
    private Task<T>? _faulted;

    /// <summary>Set last, under the lock, after <see cref="_value"/>/<see cref="_faulted"/>: readers that see true see
    /// them.</summary>
    private volatile bool _isSet;

    /// <summary>Creates an unset result.</summary>
    /// <param name="timeProvider">The clock for timeouts; <see cref="TimeProvider.System"/> when null.</param>
    public AsyncResult(TimeProvider? timeProvider = null)
    {
        _waiters = new WaitQueue<T, Policy>("AsyncResult", new Policy(this), _sync, timeProvider ?? TimeProvider.System);
    }

    /// <summary>
    /// A name for diagnostics (<c>new AsyncResult&lt;Config&gt; { Name = "config" }</c>): shown by <see cref="ToString"/> and
    /// the <c>asynctools.name</c> tag of its metrics; null (the default) for none.
    /// </summary>
    public string? Name
    {
        get => _waiters.Name;
        init => _waiters.Name = value;
    }

    /// <summary>Whether the result has been set, with a value or an exception.</summary>
    public bool IsSet => _isSet;

    /// <summary>The line of waiters, for tests.</summary>
    internal WaitLines Lines => new(_waiters);

    /// <summary>Sets the value and completes every waiter.</summary>
    /// <param name="value">The value.</param>
    /// <exception cref="InvalidOperationException">The result was already set (Toro's <c>AlreadySet</c>).</exception>
    public void Set(T value)
    {
        if (!TrySet(value))
        {
            ThrowAlreadySet();
        }
    }

    /// <summary>Sets the value unless the result is already set.</summary>
    /// <param name="value">The value.</param>
    /// <returns>True if this call set the result.</returns>
    public bool TrySet(T value) => TryComplete(value, null);

    /// <summary>Fails the result: every current and future getter throws <paramref name="exception"/>.</summary>
    /// <param name="exception">The failure.</param>
    /// <exception cref="ArgumentNullException"><paramref name="exception"/> is null.</exception>
    /// <exception cref="InvalidOperationException">The result was already set.</exception>
    public void SetException(Exception exception)
    {
        if (!TrySetException(exception))
        {
            ThrowAlreadySet();
        }
    }

    /// <summary>Fails the result unless it is already set.</summary>
    /// <param name="exception">The failure.</param>
    /// <returns>True if this call set the result.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="exception"/> is null.</exception>
    public bool TrySetException(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return TryComplete(default!, ExceptionDispatchInfo.Capture(exception));
    }

    /// <summary>Gets the value without waiting (Toro's <c>get_nowait</c>).</summary>
    /// <param name="value">The value, when this returns true.</param>
    /// <returns>True if the result is set with a value; false if it is not set yet (Toro's <c>NotReady</c>).</returns>
    /// <exception cref="Exception">The result was set with an exception: that exception is rethrown.</exception>
    public bool TryGet([MaybeNullWhen(false)] out T value)
    {
        if (!_isSet)
        {
            value = default;
            return false;
        }

        _faulted?.GetAwaiter().GetResult(); // throws the failure
        value = _value;
        return true;
    }

    /// <summary>Waits for the result.</summary>
    /// <param name="cancellationToken">Cancels the wait (not the result).</param>
    /// <returns>The value.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first.</exception>
    /// <exception cref="Exception">The result was set with an exception: that exception is rethrown.</exception>
    public ValueTask<T> GetAsync(CancellationToken cancellationToken = default) =>
        Faulted(cancellationToken) is { } faulted
            ? new ValueTask<T>(faulted)
            : _waiters.WaitAsync(new Policy(this), default!, Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>Waits at most <paramref name="timeout"/> for the result.</summary>
    /// <param name="timeout">How long to wait: <see cref="Timeout.InfiniteTimeSpan"/> for no limit, <see cref="TimeSpan.Zero"/> to check now.</param>
    /// <param name="cancellationToken">Cancels the wait (not the result).</param>
    /// <returns>The value.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than about 49.7 days.</exception>
    /// <exception cref="TimeoutException">The result was not set within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first.</exception>
    /// <exception cref="Exception">The result was set with an exception: that exception is rethrown.</exception>
    public ValueTask<T> GetAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TimeoutArgument.ThrowIfInvalid(timeout);
        return Faulted(cancellationToken) is { } faulted
            ? new ValueTask<T>(faulted)
            : _waiters.WaitAsync(new Policy(this), default!, timeout, cancellationToken);
    }

    /// <summary>The faulted task a get returns once the result failed, unless its token is already cancelled (that comes
    /// first, as for every wait); null otherwise. (A get that finds the failure only under the lock, set as it came, gets
    /// the exception from the engine's refusal.)</summary>
    private Task<T>? Faulted(CancellationToken cancellationToken) =>
        _isSet && !cancellationToken.IsCancellationRequested ? _faulted : null;

    private bool TryComplete(T value, ExceptionDispatchInfo? error)
    {
        var completions = default(Completions<T>);
        lock (_sync)
        {
            if (_isSet)
            {
                return false;
            }

            _value = value;
            if (error is not null)
            {
                _faulted = Task.FromException<T>(error.SourceException);
                _ = _faulted.Exception; // observed: made whether or not anyone gets it, so never reported as unobserved
            }

            _isSet = true;
            if (error is null)
            {
                _waiters.ServeAll(value, ref completions);
            }
            else
            {
                _waiters.FailAll(() => error, MetricNames.Acquired, ref completions); // the waiters got the result
            }
        }

        completions.CompleteAll();
        return true;
    }

    [DoesNotReturn]
    private static void ThrowAlreadySet() => throw new InvalidOperationException("The result is already set.");

    /// <summary>Describes the state, like Toro's <c>__str__</c>: <c>AsyncResult(value=42)</c>, <c>AsyncResult(unset, waiters=2)</c>; with a
    /// <see cref="Name"/> it comes first: <c>AsyncResult(name="config", value=42)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString() => Display.Format(
        "AsyncResult",
        Name,
        !_isSet ? $"unset, waiters={_waiters.Count}" : _faulted is null ? $"value={_value}" : $"error={_faulted.Exception!.InnerException!.GetType().Name}");

    /// <summary>The engine's view: a caller is served (or fails) once the result is set, with or without the lock.</summary>
    private readonly struct Policy(AsyncResult<T> owner) : IWaitPolicy<T>
    {
        public bool HasLockFreePath => true;

        public bool TryAcquire(T offer, bool willWait, ref Completions<T> completions, out T result)
        {
            // _isSet first: it is written last, so once it reads true the value and error are visible.
            bool served = owner._isSet && owner._faulted is null;
            result = served ? owner._value : default!;
            return served;
        }

        public Exception? Refusal() => owner._isSet ? owner._faulted!.Exception!.InnerException : null;

        public void OnWaiterLeft(ref Completions<T> completions)
        {
        }
    }
}
