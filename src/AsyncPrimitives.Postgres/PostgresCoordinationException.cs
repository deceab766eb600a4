namespace AsyncPrimitives.Postgres;

/// <summary>
/// A coordination call could not be carried out because of the server or the connection to it: the server could not
/// be reached, a connection was closed or its backend ended (an administrator's <c>pg_terminate_backend</c>, a server
/// restart), the schema is not installed (call <see cref="PostgresCoordinator.EnsureSchemaAsync"/>), or the server
/// refused a statement. <see cref="Exception.InnerException"/> holds the Npgsql exception, where there is one.
/// </summary>
/// <remarks>
/// Nothing is lost when this is thrown: a wait that fails leaves no place in line behind (its row is removed, or
/// expires by itself), and a permit or a queue item is never granted to a caller that saw this exception. The
/// coordinator reconnects on the next call. <see cref="PostgresLeaseLostException"/> derives from this type.
/// </remarks>
public class PostgresCoordinationException : Exception
{
    /// <summary>Creates the exception with the default message.</summary>
    public PostgresCoordinationException()
        : base("A PostgreSQL coordination call failed.")
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    /// <param name="message">The message that describes the error.</param>
    public PostgresCoordinationException(string? message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the exception that caused it.</summary>
    /// <param name="message">The message that describes the error.</param>
    /// <param name="innerException">The exception that caused this one (usually an <c>NpgsqlException</c>), or null.</param>
    public PostgresCoordinationException(string? message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
