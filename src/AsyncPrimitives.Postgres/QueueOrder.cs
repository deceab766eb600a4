namespace AsyncPrimitives.Postgres;

/// <summary>The order in which a <see cref="PostgresQueue{T}"/> delivers its items.</summary>
public enum QueueOrder
{
    /// <summary>First in, first out: the item put first is delivered first (AsyncQueue's order).</summary>
    Fifo,

    /// <summary>Last in, first out: the item put last is delivered first (AsyncLifoQueue's order).</summary>
    Lifo,

    /// <summary>Smallest priority first, and first in, first out among equal priorities (AsyncPriorityQueue's order).</summary>
    Priority,
}
