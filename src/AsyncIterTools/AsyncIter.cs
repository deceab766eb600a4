namespace AsyncIterTools;

// LOCAL STUB, NOT COMMITTED: the real AsyncIter.cs (class summary) belongs to the sequential-operators branch.

/// <summary>Operators over <see cref="IAsyncEnumerable{T}"/>.</summary>
public static partial class AsyncIter
{
}
