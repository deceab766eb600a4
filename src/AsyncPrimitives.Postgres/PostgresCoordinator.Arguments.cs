using Npgsql;

namespace AsyncPrimitives.Postgres;

// The checks of the arguments that the coordinator, its locks, semaphores and queues take.
public sealed partial class PostgresCoordinator
{
    /// <summary>Checks that a caller's transaction can carry a put: not disposed, and on the coordinator's database.
    /// (Npgsql refuses a committed or rolled-back one when the put runs: see <see cref="PostgresQueue{T}"/>.)</summary>
    internal void ValidateTransaction(NpgsqlTransaction transaction, [System.Runtime.CompilerServices.CallerArgumentExpression(nameof(transaction))] string? paramName = null)
    {
        NpgsqlConnection? connection;
        try
        {
            connection = transaction.Connection;
        }
        catch (ObjectDisposedException e)
        {
            throw new ArgumentException("The transaction has completed and was disposed.", paramName, e);
        }

        if (connection is null)
        {
            throw new ArgumentException("The transaction has completed.", paramName);
        }

        (string? Host, int Port, string? Database) theirs = Endpoint(connection.ConnectionString);
        if (!string.Equals(theirs.Host, _endpoint.Host, StringComparison.OrdinalIgnoreCase) || theirs.Port != _endpoint.Port ||
            !string.Equals(theirs.Database, _endpoint.Database, StringComparison.Ordinal))
        {
            throw new ArgumentException(
                $"The transaction's connection is to {theirs.Host}:{theirs.Port}/{theirs.Database}, not to the coordinator's database " +
                $"{_endpoint.Host}:{_endpoint.Port}/{_endpoint.Database} (compared as written in the connection strings): the item " +
                "would be put in another database.",
                paramName);
        }
    }

    /// <summary>Where a connection string connects: host, port and database (the user's name when none is given).</summary>
    private static (string? Host, int Port, string? Database) Endpoint(string connectionString)
    {
        var settings = new NpgsqlConnectionStringBuilder(connectionString);
        return (settings.Host, settings.Port, settings.Database ?? settings.Username);
    }

    /// <summary>The one check of a lease duration (the coordinator's, or a queue's).</summary>
    private static void ValidateLeaseDuration(TimeSpan leaseDuration, string paramName)
    {
        if (leaseDuration < s_minLeaseDuration || leaseDuration.TotalMilliseconds > TimeoutArgument.MaxMilliseconds)
        {
            throw new ArgumentOutOfRangeException(
                paramName, leaseDuration, "LeaseDuration must be at least 1 second and at most 4294967294 milliseconds.");
        }
    }

    /// <summary>The one check of a lock, semaphore or queue name.</summary>
    internal static void ValidateName(string name, [System.Runtime.CompilerServices.CallerArgumentExpression(nameof(name))] string? paramName = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name, paramName);
        if (name.Length > MaxNameLength)
        {
            throw new ArgumentException($"The name is longer than {MaxNameLength} characters.", paramName);
        }

        // PostgreSQL's text holds neither U+0000 nor half of a surrogate pair: such a name would fail every call.
        Span<byte> utf8 = stackalloc byte[MaxNameLength * 3];
        if (name.Contains('\0', StringComparison.Ordinal) ||
            System.Text.Unicode.Utf8.FromUtf16(name, utf8, out _, out _, replaceInvalidSequences: false) != System.Buffers.OperationStatus.Done)
        {
            throw new ArgumentException("The name contains U+0000 or an unpaired surrogate, which PostgreSQL's text cannot hold.", paramName);
        }
    }
}
