using System.Reflection;
using AsyncPrimitives.Internal;

namespace AsyncTools.StressTests;

/// <summary>
/// Looks inside a primitive at its wait queues (the shared engine, <see cref="WaitQueue{T}"/>): how many waiters are
/// linked, how many nodes are pooled, and the nodes themselves (for WeakReference leak checks). Reflection finds the
/// private fields, so this works for every primitive without widening their internal surface.
/// </summary>
internal static class WaitEngineProbe
{
    /// <summary>Every wait queue of <paramref name="primitive"/> (looking through a PermitPool too).</summary>
    public static IReadOnlyList<object> Queues(object primitive)
    {
        var queues = new List<object>();
        Collect(primitive, queues, depth: 0);
        return queues;
    }

    /// <summary>Linked waiters over all of the primitive's queues.</summary>
    public static int Waiters(object primitive) => Queues(primitive).Sum(q => (int)Property(q, "Count"));

    /// <summary>The most nodes any one of the primitive's queues keeps for reuse.</summary>
    public static int MaxPooled(object primitive) => Queues(primitive).Select(q => (int)Property(q, "PooledCount")).DefaultIfEmpty(0).Max();

    /// <summary>WeakReferences to every node linked in the primitive's queues right now.</summary>
    public static List<WeakReference> LinkedNodes(object primitive)
    {
        var nodes = new List<WeakReference>();
        foreach (object queue in Queues(primitive))
        {
            object? node = Property(queue, "Head");
            while (node is not null)
            {
                nodes.Add(new WeakReference(node));
                node = node.GetType().GetField("Next", BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public)!.GetValue(node);
            }
        }

        return nodes;
    }

    private static void Collect(object owner, List<object> queues, int depth)
    {
        foreach (FieldInfo field in owner.GetType().GetFields(BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public))
        {
            Type type = field.FieldType;
            if (!type.IsGenericType)
            {
                continue;
            }

            Type definition = type.GetGenericTypeDefinition();
            if (definition == typeof(WaitQueue<>))
            {
                queues.Add(field.GetValue(owner)!);
            }
            else if (definition == typeof(PermitPool<>) && depth == 0)
            {
                Collect(field.GetValue(owner)!, queues, depth + 1);
            }
        }

        // Queue fields are declared on the shared base class.
        for (Type? baseType = owner.GetType().BaseType; baseType is not null && baseType != typeof(object) && depth == 0; baseType = baseType.BaseType)
        {
            foreach (FieldInfo field in baseType.GetFields(BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                if (field.FieldType.IsGenericType && field.FieldType.GetGenericTypeDefinition() == typeof(WaitQueue<>))
                {
                    queues.Add(field.GetValue(owner)!);
                }
            }
        }
    }

    private static object Property(object target, string name) =>
        target.GetType().GetProperty(name, BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public)!.GetValue(target)!;
}
