using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;

namespace AsyncTools.Testing;

/// <summary>
/// Dumps an assembly's public surface as sorted text, for the API approval tests: the checked-in file
/// <c>api/&lt;Assembly&gt;.txt</c> must equal what the build exposes. To accept a reviewed change, run the tests with
/// <c>ASYNCTOOLS_ACCEPT_API=1</c> and commit the rewritten file.
/// </summary>
public static class PublicApi
{
    public static string Describe(Assembly assembly)
    {
        var lines = new List<string>();
        foreach (Type type in assembly.GetExportedTypes().OrderBy(t => t.FullName, StringComparer.Ordinal))
        {
            lines.Add(DescribeType(type));
            const BindingFlags Flags = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
            var members = new List<string>();
            foreach (MemberInfo member in type.GetMembers(Flags))
            {
                string? text = member switch
                {
                    ConstructorInfo c => $"ctor({Parameters(c.GetParameters())})",
                    MethodInfo m when !m.IsSpecialName => DescribeMethod(m),
                    PropertyInfo p => $"{(IsStatic(p) ? "static " : "")}{Name(p.PropertyType)} {p.Name} {{ {(p.GetMethod?.IsPublic == true ? "get; " : "")}{(p.SetMethod?.IsPublic == true ? "set; " : "")}}}",
                    FieldInfo f => $"{(f.IsStatic ? "static " : "")}{(f.IsLiteral ? "const " : f.IsInitOnly ? "readonly " : "")}{Name(f.FieldType)} {f.Name}",
                    EventInfo e => $"event {Name(e.EventHandlerType!)} {e.Name}",
                    _ => null,
                };
                if (text is not null)
                {
                    members.Add("    " + text);
                }
            }

            members.Sort(StringComparer.Ordinal);
            lines.AddRange(members);
        }

        return string.Join("\n", lines) + "\n";
    }

    /// <summary>Compares the assembly's surface with <c>api/&lt;name&gt;.txt</c> at the repository root.</summary>
    public static void Verify(Assembly assembly)
    {
        string actual = Describe(assembly);
        string path = Path.Combine(RepositoryRoot(), "api", assembly.GetName().Name + ".txt");
        if (Environment.GetEnvironmentVariable("ASYNCTOOLS_ACCEPT_API") == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, actual);
            return;
        }

        File.Exists(path).Should().BeTrue($"the approved API file {path} must exist (run with ASYNCTOOLS_ACCEPT_API=1 to create it)");
        string approved = File.ReadAllText(path).Replace("\r\n", "\n");
        actual.Should().Be(approved,
            "the public API changed; review the difference, then run the tests with ASYNCTOOLS_ACCEPT_API=1 and commit api/*.txt");
    }

    private static string RepositoryRoot([CallerFilePath] string thisFile = "")
    {
        // Prefer the source location (tests/Shared/PublicApi.cs); fall back to walking up from the test binaries.
        foreach (string start in new[] { Path.GetDirectoryName(thisFile) ?? "", AppContext.BaseDirectory })
        {
            for (DirectoryInfo? dir = new(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "AsyncTools.sln")))
                {
                    return dir.FullName;
                }
            }
        }

        throw new InvalidOperationException("AsyncTools.sln not found above " + AppContext.BaseDirectory);
    }

    private static bool IsStatic(PropertyInfo p) => (p.GetMethod ?? p.SetMethod)!.IsStatic;

    private static string DescribeType(Type type)
    {
        string kind = type.IsInterface ? "interface"
            : type.IsEnum ? "enum"
            : type.IsValueType ? (type.GetCustomAttributesData().Any(a => a.AttributeType.FullName == typeof(IsReadOnlyAttribute).FullName) ? "readonly struct" : "struct")
            : typeof(Delegate).IsAssignableFrom(type) ? "delegate"
            : type.IsAbstract && type.IsSealed ? "static class"
            : type.IsAbstract ? "abstract class"
            : type.IsSealed ? "sealed class"
            : "class";
        var bases = new List<string>();
        if (type.BaseType is { } b && b != typeof(object) && b != typeof(ValueType) && b != typeof(Enum))
        {
            bases.Add(Name(b));
        }

        bases.AddRange(type.GetInterfaces().Where(i => i.IsPublic || i.IsNestedPublic).Select(Name).OrderBy(n => n, StringComparer.Ordinal));
        return $"{kind} {Name(type)}{(bases.Count > 0 ? " : " + string.Join(", ", bases) : "")}";
    }

    private static string DescribeMethod(MethodInfo m)
    {
        var sb = new StringBuilder();
        if (m.IsStatic)
        {
            sb.Append("static ");
        }
        else if (m.IsAbstract)
        {
            sb.Append("abstract ");
        }
        else if (m.IsVirtual && m.GetBaseDefinition() != m)
        {
            sb.Append("override ");
        }
        else if (m.IsVirtual && !m.IsFinal)
        {
            sb.Append("virtual ");
        }

        sb.Append(Name(m.ReturnType)).Append(' ').Append(m.Name);
        if (m.IsGenericMethodDefinition)
        {
            sb.Append('<').Append(string.Join(", ", m.GetGenericArguments().Select(a => a.Name))).Append('>');
        }

        bool extension = m.IsDefined(typeof(ExtensionAttribute));
        sb.Append('(').Append(extension ? "this " : "").Append(Parameters(m.GetParameters())).Append(')');
        return sb.ToString();
    }

    private static string Parameters(ParameterInfo[] parameters) => string.Join(", ", parameters.Select(p =>
    {
        string prefix = p.IsOut ? "out " : p.ParameterType.IsByRef ? "ref " : p.IsDefined(typeof(ParamArrayAttribute)) ? "params " : "";
        string type = Name(p.ParameterType.IsByRef ? p.ParameterType.GetElementType()! : p.ParameterType);
        string optional = p.HasDefaultValue ? " = " + (p.DefaultValue is null ? (p.ParameterType.IsValueType && Nullable.GetUnderlyingType(p.ParameterType) is null ? "default" : "null") : p.DefaultValue is string s ? $"\"{s}\"" : p.DefaultValue is bool bv ? (bv ? "true" : "false") : Convert.ToString(p.DefaultValue, System.Globalization.CultureInfo.InvariantCulture)) : "";
        return $"{prefix}{type} {p.Name}{optional}";
    }));

    private static string Name(Type type)
    {
        if (type.IsGenericParameter)
        {
            return type.Name;
        }

        if (type.IsArray)
        {
            return Name(type.GetElementType()!) + "[]";
        }

        if (Nullable.GetUnderlyingType(type) is { } inner)
        {
            return Name(inner) + "?";
        }

        string name = type.IsNested ? Name(type.DeclaringType!) + "." + type.Name : (type.Namespace is null ? "" : type.Namespace + ".") + type.Name;
        if (type.IsGenericType)
        {
            int tick = name.LastIndexOf('`');
            if (tick >= 0)
            {
                name = name[..tick];
            }

            Type[] args = type.GetGenericArguments();
            if (type.IsNested)
            {
                // Nested types repeat the outer type's arguments; show only their own.
                args = args.Skip(type.DeclaringType!.GetGenericArguments().Length).ToArray();
                if (args.Length == 0)
                {
                    return name;
                }
            }

            name += "<" + string.Join(", ", args.Select(Name)) + ">";
        }

        return name;
    }
}
