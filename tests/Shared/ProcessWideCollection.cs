namespace AsyncTools.Testing;

/// <summary>
/// The tests of a test assembly that measure something process-wide run in this collection, alone: a test listening to
/// a meter must not hear the waits of tests running beside it, and one counting the bytes every thread allocates must
/// not count theirs.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideCollection
{
    public const string Name = "Process-wide measurements (alone: meters, allocated bytes)";
}
