using System.Security.Cryptography;
using System.Text;
using AsyncPrimitives.Postgres.Internal;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// <c>EnsureSchemaAsync</c> replaces the functions of an installed schema only when its recorded revision is older than
/// the library's, so a fix in a function's body reaches databases installed by an earlier release only if the revision
/// was raised with it. This pins the script to its version and revision.
/// </summary>
public sealed class SchemaRevisionTests
{
    [Fact]
    public void TheScript_IsTheOneItsVersionAndRevisionWereRecordedFor()
    {
        using Stream stream = typeof(PostgresCoordinator).Assembly.GetManifestResourceStream("AsyncPrimitives.Postgres.Schema.sql")!;
        using var reader = new StreamReader(stream);
        string script = reader.ReadToEnd().Replace("\r\n", "\n", StringComparison.Ordinal);
        string hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(script)));

        (Database.Version, Database.Revision, hash).Should().Be(
            (1, 3, "8CD93D5C97922FC7E2D2F21ABC76F9336A1C0CA787F456738BCFF124553603BE"),
            "a change to Schema.sql raises Database.Revision (a function's body) or Database.Version (a table, or a " +
            "function's name, parameters or result), and records the script's new hash here");
    }
}
