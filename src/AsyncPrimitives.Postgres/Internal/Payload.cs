using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace AsyncPrimitives.Postgres.Internal;

/// <summary>How a queue's items are written to and read from the server: JSON, through System.Text.Json.</summary>
internal static class Payload
{
    /// <summary>
    /// The JSON contract of <typeparamref name="T"/>, checked now: a queue whose items could be put but never read
    /// (or not put at all) fails at creation, not at its first delivery. Every type reading reaches (the types of the
    /// properties it sets without a converter of their own, element types) must have a converter that can read its
    /// kind of JSON. The options are made read-only, as System.Text.Json's first use of them does.
    /// </summary>
    /// <exception cref="ArgumentException">System.Text.Json cannot write or read <typeparamref name="T"/> (with
    /// <paramref name="options"/>); the parameter named is <c>T</c>.</exception>
    public static JsonTypeInfo<T> Contract<T>(JsonSerializerOptions options)
    {
        try
        {
            // As System.Text.Json's first use of the options does: they are fixed from now on, with its default
            // resolver when none was set (GetTypeInfo alone would not fill it in).
            options.MakeReadOnly(populateMissingResolver: true);
            var contract = (JsonTypeInfo<T>)options.GetTypeInfo(typeof(T));
            Check(contract, constructed: true, new HashSet<(Type, bool)>());
            return contract;
        }
        catch (Exception e) when (e is NotSupportedException or InvalidOperationException or ArgumentException)
        {
            throw new ArgumentException(
                $"System.Text.Json cannot write and read {typeof(T)} as a queue item: {e.Message}", "T", e);
        }
    }

    /// <summary>Whether System.Text.Json itself refused the type (not the type's own code, which may throw the same
    /// exception types from a constructor): it throws from its own methods. It wraps a <see cref="NotSupportedException"/>
    /// thrown while reading (its own or the type's) in another that names the path, so the first thrower is the one
    /// asked (an inner exception it made to describe the refusal, never thrown, has no stack trace). A method with no
    /// declaring type is code it emitted to construct the type, into which the JIT may inline the type's constructor:
    /// the type's own code.</summary>
    private static bool IsRefusedBySystemTextJson(Exception e)
    {
        while (e is NotSupportedException { InnerException: { StackTrace: not null } inner })
        {
            e = inner;
        }

        return e is NotSupportedException or InvalidOperationException
            && e.TargetSite?.DeclaringType?.Assembly == typeof(JsonSerializer).Assembly;
    }

    /// <summary>Reads a minimal document of the contract's kind (an empty object, a dictionary of one key, an empty array,
    /// a string): the converters of unsupported types (delegates, reflection types, pointers, dictionary keys it cannot
    /// read) and of types with no usable constructor (interfaces, abstract classes) refuse it with <see cref="NotSupportedException"/> or
    /// <see cref="InvalidOperationException"/>, where a supported type at most finds the data wrong (<see cref="JsonException"/>,
    /// or its own constructor refusing the missing values).
    /// A polymorphic type is checked through its derived types. A value System.Text.Json fills rather than creates (a
    /// get-only property it populates) is not <paramref name="constructed"/>: only what it reads into it is checked.</summary>
    private static void Check(JsonTypeInfo contract, bool constructed, HashSet<(Type, bool)> seen)
    {
        if (!seen.Add((contract.Type, constructed)) || contract.Type == typeof(object))
        {
            return;
        }

        if (contract.PolymorphismOptions is { DerivedTypes.Count: > 0 } polymorphism)
        {
            // Read through its type discriminator as one of its derived types: each of them must be readable. An
            // abstract base is never read as itself (the probe below would find no discriminator).
            foreach (JsonDerivedType derived in polymorphism.DerivedTypes)
            {
                Check(contract.Options.GetTypeInfo(derived.DerivedType), constructed, seen);
            }

            if (contract.Type.IsAbstract)
            {
                return;
            }
        }

        if (constructed)
        {
            string probe = contract.Kind switch
            {
                // A dictionary is read with one key: its key converter is asked to read it (an object key it cannot).
                JsonTypeInfoKind.Dictionary => "{\"0\":null}",
                JsonTypeInfoKind.Object => "{}",
                JsonTypeInfoKind.Enumerable => "[]",
                _ => "\"\"",
            };
            try
            {
                _ = JsonSerializer.Deserialize(probe, contract);
            }
#pragma warning disable CA1031 // Only System.Text.Json's own two refusals mean "unreadable"; anything else is the type reading.
            catch (Exception e) when (!IsRefusedBySystemTextJson(e))
#pragma warning restore CA1031
            {
                // The type is readable: this document does not fit it (JsonException), or the type's own code refused it
                // (a constructor that validates its arguments: ArgumentNullException for a missing property).
            }
        }

        bool parameterized = contract.Properties.Any(p => p.AssociatedParameter is not null);
        foreach (JsonPropertyInfo property in contract.Properties)
        {
            if (property.CustomConverter is not null)
            {
                continue; // read through a converter of its own
            }

            if (property.Set is not null || property.AssociatedParameter is not null)
            {
                Check(contract.Options.GetTypeInfo(property.PropertyType), constructed: true, seen);
            }
            else if (IsPopulated(contract, property, parameterized))
            {
                Check(contract.Options.GetTypeInfo(property.PropertyType), constructed: false, seen);
            }

            // Otherwise only written: its type need not be readable.
        }

        if (contract.ElementType is { } element)
        {
            Check(contract.Options.GetTypeInfo(element), constructed: true, seen);
        }
    }

    /// <summary>Whether reading the object fills a <paramref name="property"/> it cannot set: asked of the property
    /// itself, or preferred for the type or the options, where System.Text.Json honours the preference (not on a type
    /// read through a parameterized constructor, nor for a value type, nor for read-only properties it ignores).</summary>
    private static bool IsPopulated(JsonTypeInfo contract, JsonPropertyInfo property, bool parameterized) =>
        property.ObjectCreationHandling == JsonObjectCreationHandling.Populate
        || (property.ObjectCreationHandling is null
            && (contract.PreferredPropertyObjectCreationHandling ?? contract.Options.PreferredObjectCreationHandling) == JsonObjectCreationHandling.Populate
            && !parameterized
            && !property.PropertyType.IsValueType
            && !contract.Options.IgnoreReadOnlyProperties);
}
