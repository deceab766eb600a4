using System.Diagnostics;

namespace AsyncIterTools;

/// <summary>
/// The settled result of one piece of work: either a value or the exception it failed with
/// (Python's <c>gather(..., return_exceptions=True)</c> element).
/// </summary>
/// <typeparam name="T">The type of the value on success.</typeparam>
/// <remarks>
/// <para>
/// <see cref="Outcome{T}"/> is a <see langword="readonly"/> <see langword="struct"/> rather than a class so that
/// <see cref="AsyncIter.GatherSettledAsync{T}(IEnumerable{Func{CancellationToken, Task{T}}}, int?, CancellationToken)"/>
/// over a collection of work returns one array and, once its <c>maxConcurrency</c> window is full, allocates nothing per
/// successful item (with no limit every piece runs at once, each with its own bookkeeping); over a lazy sequence of
/// work the array grows by doubling and is trimmed at the end. Like <see cref="ValueTask{TResult}"/>,
/// <c>default(Outcome&lt;T&gt;)</c> is a success whose value is <c>default(T)</c>.
/// </para>
/// <para>Instances are immutable and safe to share between threads.</para>
/// </remarks>
/// <example>
/// <code>
/// Outcome&lt;int&gt;[] outcomes = await AsyncIter.GatherSettledAsync(work, maxConcurrency: 4);
/// foreach (Outcome&lt;int&gt; o in outcomes)
/// {
///     Console.WriteLine(o.IsSuccess ? $"ok {o.Value}" : $"failed: {o.Exception!.Message}");
/// }
/// </code>
/// </example>
[DebuggerDisplay("{ToString(),nq}")]
public readonly struct Outcome<T> : IEquatable<Outcome<T>>
{
    private readonly T _value;
    private readonly Exception? _exception;

    private Outcome(T value, Exception? exception)
    {
        _value = value;
        _exception = exception;
    }

    /// <summary>Gets a value indicating whether the work produced a value.</summary>
    /// <value><see langword="true"/> when the work succeeded; <see langword="false"/> when it failed or was cancelled.</value>
    public bool IsSuccess => _exception is null;

    /// <summary>Gets the value the work produced.</summary>
    /// <value>The value of a successful outcome.</value>
    /// <exception cref="InvalidOperationException">The outcome is a failure; the failure is the inner exception.</exception>
    public T Value => _exception is null
        ? _value
        : throw new InvalidOperationException("The outcome is a failure and has no value.", _exception);

    /// <summary>Gets the exception the work failed with.</summary>
    /// <value>The exception of a failed outcome (an <see cref="OperationCanceledException"/> if the work was cancelled); <see langword="null"/> on success.</value>
    public Exception? Exception => _exception;

    /// <summary>Creates a successful outcome.</summary>
    /// <param name="value">The value the work produced.</param>
    /// <returns>An outcome whose <see cref="IsSuccess"/> is <see langword="true"/>.</returns>
#pragma warning disable CA1000 // A static factory on the generic type reads best here: Outcome<int>.FromValue(1).
    public static Outcome<T> FromValue(T value) => new(value, null);

    /// <summary>Creates a failed outcome.</summary>
    /// <param name="exception">The exception the work failed with.</param>
    /// <returns>An outcome whose <see cref="IsSuccess"/> is <see langword="false"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="exception"/> is <see langword="null"/>.</exception>
    public static Outcome<T> FromException(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return new(default!, exception);
    }
#pragma warning restore CA1000

    /// <summary>Gets the value if the outcome is a success.</summary>
    /// <param name="value">The value on success; <c>default</c> otherwise.</param>
    /// <returns><see langword="true"/> if the outcome is a success.</returns>
    public bool TryGetValue(out T value)
    {
        value = _value;
        return _exception is null;
    }

    /// <summary>Returns the value, or rethrows the failure with its original stack trace.</summary>
    /// <returns>The value of a successful outcome.</returns>
    /// <exception cref="Exception">The exception of a failed outcome, rethrown as is.</exception>
    public T GetValueOrThrow()
    {
        if (_exception is not null)
        {
            ExceptionDispatchInfo.Capture(_exception).Throw();
        }

        return _value;
    }

    /// <summary>Returns <c>Success(value)</c> or <c>Failure(ExceptionType: message)</c>.</summary>
    /// <returns>A string that shows the state of the outcome.</returns>
    public override string ToString() => _exception is null
        ? $"Success({_value})"
        : $"Failure({_exception.GetType().Name}: {_exception.Message})";

    /// <summary>Compares two outcomes: equal values, or the same exception instance.</summary>
    /// <param name="other">The outcome to compare with.</param>
    /// <returns><see langword="true"/> if both outcomes are equal.</returns>
    public bool Equals(Outcome<T> other) =>
        ReferenceEquals(_exception, other._exception) && EqualityComparer<T>.Default.Equals(_value, other._value);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Outcome<T> other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => _exception?.GetHashCode() ?? (_value is null ? 0 : EqualityComparer<T>.Default.GetHashCode(_value));

    /// <summary>Compares two outcomes for equality.</summary>
    /// <param name="left">The first outcome.</param>
    /// <param name="right">The second outcome.</param>
    /// <returns><see langword="true"/> if the outcomes are equal.</returns>
    public static bool operator ==(Outcome<T> left, Outcome<T> right) => left.Equals(right);

    /// <summary>Compares two outcomes for inequality.</summary>
    /// <param name="left">The first outcome.</param>
    /// <param name="right">The second outcome.</param>
    /// <returns><see langword="true"/> if the outcomes differ.</returns>
    public static bool operator !=(Outcome<T> left, Outcome<T> right) => !left.Equals(right);
}
