namespace AsyncTools.Testing;

/// <summary>A test that needs a PostgreSQL server: skipped with <see cref="TestPostgres.SkipReason"/> where there is none.</summary>
public sealed class PostgresFactAttribute : FactAttribute
{
    public PostgresFactAttribute()
    {
        if (TestPostgres.SkipReason is { } reason)
        {
            Skip = reason;
        }
    }
}
