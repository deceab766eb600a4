using System.Diagnostics;
using System.Text.RegularExpressions;
using Npgsql;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>The schema: its version and revision, the names it accepts, and its installation from Schema.sql.</summary>
internal sealed partial class Database
{
    /// <summary>The script's statement that makes the schema (left out when it exists).</summary>
    private const string CreateSchemaStatement = "CREATE SCHEMA IF NOT EXISTS __schema__;";

    private static readonly Lazy<string> s_script = new(LoadScript);

    /// <summary>The version of the schema this library installs and expects: its tables, and its functions' names,
    /// parameters and results. A library that changes any of them raises it.</summary>
    public const int Version = 1;

    /// <summary>
    /// The revision of the functions' bodies within <see cref="Version"/>; raised with every change to Schema.sql that
    /// keeps the version (a fix in a function), so that <see cref="InstallAsync"/> replaces older bodies on a schema
    /// already installed. Bodies of one version are interchangeable: an instance of an older revision works with newer
    /// ones. (A test pins the script's hash to this number.)
    /// </summary>
    public const int Revision = 8;

    /// <summary>The first revision whose grants move the token sequence ahead after a crash (see ids_jump).</summary>
    private const int TokensJumpAfterACrashSince = 5;

    /// <summary>Whether <paramref name="schema"/> is a name the options accept.</summary>
    public static bool IsValidSchemaName(string? schema) =>
        schema is not null && SchemaName().IsMatch(schema) && !schema.StartsWith("pg_", StringComparison.Ordinal);

    /// <summary>Installs the schema, or brings it up to <see cref="Version"/> and <see cref="Revision"/> (see
    /// <see cref="PostgresCoordinator.EnsureSchemaAsync"/>): in one transaction, under a transaction-level advisory lock.
    /// Never goes back to an older revision, so instances of two releases started in turn do not replace each other's
    /// functions back and forth.</summary>
    public async Task InstallAsync(CancellationToken cancellationToken)
    {
        NpgsqlConnection connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var connectionScope = connection.ConfigureAwait(false);
        try
        {
            NpgsqlTransaction transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using var transactionScope = transaction.ConfigureAwait(false);
            using (var turn = new NpgsqlCommand("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", connection, transaction))
            {
                turn.Parameters.Add(Parameter("AsyncPrimitives.Postgres schema " + Schema));
                await turn.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }

            (int Version, int? Revision) installed = (0, 0);
            using (var version = new NpgsqlCommand("SELECT to_regclass($1) IS NOT NULL", connection, transaction))
            {
                version.Parameters.Add(Parameter(Quoted + ".schema_version"));
                if ((bool)(await version.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!)
                {
                    // The revision read through to_jsonb: a schema installed by a pre-release build has no such column.
                    version.CommandText = Sql(
                        "SELECT v.version, (to_jsonb(v) ->> 'revision')::int FROM __schema__.schema_version v " +
                        "ORDER BY v.version DESC LIMIT 1");
                    version.Parameters.Clear();
                    NpgsqlDataReader row = await version.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                    await using var rowScope = row.ConfigureAwait(false);
                    if (await row.ReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        installed = (row.GetInt32(0), row.IsDBNull(1) ? null : row.GetInt32(1));
                    }
                }
            }

            if (installed.Revision is null)
            {
                throw new PostgresCoordinationException(
                    $"The schema \"{Schema}\" was installed by a pre-release build of AsyncPrimitives.Postgres, whose tables " +
                    $"differ from this version's and cannot be changed in place: drop it (DROP SCHEMA \"{Schema}\" CASCADE, " +
                    "which deletes its queues' items) and call EnsureSchemaAsync again.");
            }

            if (installed.Version > Version)
            {
                throw new PostgresCoordinationException(
                    $"The schema \"{Schema}\" has version {installed.Version}, newer than this library's {Version}: update AsyncPrimitives.Postgres.");
            }

            if (installed.Version < Version || installed.Revision < Revision)
            {
                // Every statement of the script is idempotent: tables and indexes are made if missing, functions replaced.
                // The schema itself is made only when missing: CREATE SCHEMA IF NOT EXISTS asks for CREATE on the
                // database before it looks, which the owner of a schema made for it, or one upgrading it, need not have.
                string script = s_script.Value;
                using (var exists = new NpgsqlCommand("SELECT to_regnamespace($1) IS NOT NULL", connection, transaction))
                {
                    exists.Parameters.Add(Parameter(Quoted));
                    if ((bool)(await exists.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!)
                    {
                        Debug.Assert(script.Contains(CreateSchemaStatement, StringComparison.Ordinal), "The script makes its schema.");
                        script = script.Replace(CreateSchemaStatement, string.Empty, StringComparison.Ordinal);
                    }
                }

                using var install = new NpgsqlCommand(script.Replace(SchemaPlaceholder, Quoted, StringComparison.Ordinal), connection, transaction);
                await install.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                if (installed.Version > 0 && installed.Revision < TokensJumpAfterACrashSince)
                {
                    // The grants of older revisions did not move the sequence ahead after a crash, and one may have
                    // happened since: the sequence moves ahead once now, flushed at commit.
                    using var jump = new NpgsqlCommand(Sql("SELECT __schema__.ids_jump()"), connection, transaction);
                    await jump.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }

                using var record = new NpgsqlCommand(
                    Sql("UPDATE __schema__.schema_version SET revision = $2 WHERE version = $1"), connection, transaction);
                record.Parameters.Add(Parameter(Version));
                record.Parameters.Add(Parameter(Revision));
                await record.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }

            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException e)
        {
            throw Failure(e, "Installing the schema");
        }
    }

    private static string LoadScript()
    {
        using Stream stream = typeof(Database).Assembly.GetManifestResourceStream("AsyncPrimitives.Postgres.Schema.sql")
            ?? throw new InvalidOperationException("The schema script is missing from the assembly.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    // \z, not $: $ also matches before a final newline.
    [GeneratedRegex(@"^[a-z_][a-z0-9_]{0,62}\z", RegexOptions.CultureInvariant)]
    private static partial Regex SchemaName();
}
