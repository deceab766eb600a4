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
            (1, 8, "F7BD8A04929B30448E003AD23600A31D6138CE60875731F3583C103E03FAD38F"),
            "a change to Schema.sql raises Database.Revision (a function's body) or Database.Version (a table, or a " +
            "function's name, parameters or result), and records the script's new hash here");
    }
}
