namespace AsyncPrimitives.Postgres;

/// <summary>
/// Thrown by <see cref="PostgresDelivery{T}.CompleteAsync"/>, <see cref="PostgresQueue{T}.CompleteManyAsync"/> and the
/// next item of <see cref="PostgresQueue{T}.ReadAllAsync"/> when the delivery's lease is no longer held: it expired
/// (its heartbeat could not reach the server for a whole lease duration), or the coordinator's session ended. The item
/// was not completed; it may already be with another consumer, and will be delivered again if no one completes it.
/// </summary>
public sealed class PostgresLeaseLostException : PostgresCoordinationException
{
    /// <summary>Creates the exception with the default message.</summary>
    public PostgresLeaseLostException()
        : base("The lease was lost before the call: it expired or its session ended.")
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    /// <param name="message">The message that describes the error.</param>
    public PostgresLeaseLostException(string? message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the exception that caused it.</summary>
    /// <param name="message">The message that describes the error.</param>
    /// <param name="innerException">The exception that caused this one, or null.</param>
    public PostgresLeaseLostException(string? message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
