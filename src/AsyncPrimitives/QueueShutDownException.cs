namespace AsyncPrimitives;

/// <summary>
/// Thrown by a queue's puts after <see cref="AsyncQueueBase{T}.Shutdown(bool)"/>, and by its gets once it is shut
/// down and empty (Python 3.13's <c>asyncio.QueueShutDown</c>).
/// </summary>
public sealed class QueueShutDownException : InvalidOperationException
{
    /// <summary>Creates the exception with the default message.</summary>
    public QueueShutDownException()
        : base("The queue has been shut down.")
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    /// <param name="message">The message that describes the error.</param>
    public QueueShutDownException(string? message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the exception that caused it.</summary>
    /// <param name="message">The message that describes the error.</param>
    /// <param name="innerException">The exception that caused this one, or null.</param>
    public QueueShutDownException(string? message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
