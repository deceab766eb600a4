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
            (1, 8, "9ED6B5EA103054E69192CCA6D1C64D4E7B17672ABF24A6388623B73374F4691E"),
            "a change to Schema.sql raises Database.Revision (a function's body) or Database.Version (a table, or a " +
            "function's name, parameters or result), and records the script's new hash here");
    }
}
