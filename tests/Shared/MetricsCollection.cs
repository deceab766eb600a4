namespace AsyncTools.Testing;

/// <summary>
/// The metrics tests of a test assembly run in this collection, alone: the meters are process-wide, so a test listening
/// to one must not hear the waits of tests running beside it.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MetricsCollection
{
    public const string Name = "Metrics (alone: meters are process-wide)";
}
