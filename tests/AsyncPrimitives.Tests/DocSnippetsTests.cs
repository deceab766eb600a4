using System.Runtime.CompilerServices;
using System.Text;
using System.Text.RegularExpressions;

namespace AsyncPrimitives.Tests;

/// <summary>
/// Keeps the C# in README.md, docs/*.md and each package's README (src/*/README.md) identical to code that compiles:
/// every csharp block must be marked, and is checked by its marker.
/// <list type="bullet">
/// <item><c>&lt;!-- snippet: NAME --&gt;</c>: the block equals the <c>// doc: NAME</c> ... <c>// end doc</c> region of a
/// test, sample or library source file (a fragment is compiled, and run, in the context of its test). Run with
/// ASYNCTOOLS_ACCEPT_DOCS=1 to rewrite these blocks from the sources.</item>
/// <item><c>&lt;!-- signatures --&gt;</c>: each declaration in the block (a line starting with <c>public</c>, up to its
/// closing parenthesis) equals, up to whitespace, a public declaration in src/.</item>
/// </list>
/// A csharp block without a marker, or a code fence without a language, fails the test.
/// </summary>
public sealed partial class DocSnippetsTests
{
    [Fact]
    public void DocPages_ShowExactlyTheCompiledSnippets()
    {
        string root = RepositoryRoot();
        Dictionary<string, string> snippets = ReadSnippets(root);
        bool accept = Environment.GetEnvironmentVariable("ASYNCTOOLS_ACCEPT_DOCS") == "1";
        var problems = new List<string>();
        int checkedBlocks = 0;

        foreach (string page in DocPages(root))
        {
            string text = File.ReadAllText(page).Replace("\r\n", "\n");
            string rewritten = SnippetBlock().Replace(text, m =>
            {
                string name = m.Groups["name"].Value;
                checkedBlocks++;
                if (!snippets.TryGetValue(name, out string? code))
                {
                    problems.Add($"{Path.GetFileName(page)}: no source region '// doc: {name}'");
                    return m.Value;
                }

                if (m.Groups["code"].Value != code)
                {
                    problems.Add($"{Path.GetFileName(page)}: snippet '{name}' differs from its source");
                }

                return $"<!-- snippet: {name} -->\n```csharp\n{code}```";
            });

            if (accept && rewritten != text)
            {
                File.WriteAllText(page, rewritten);
            }
        }

        if (accept)
        {
            return;
        }

        problems.Should().BeEmpty("docs must show the code that the tests compile (run with ASYNCTOOLS_ACCEPT_DOCS=1 to refresh)");
        checkedBlocks.Should().BePositive();
    }

    [Fact]
    public void DocPages_HaveNoUncheckedCSharpBlock()
    {
        var problems = new List<string>();
        int blocks = 0;
        foreach (string page in DocPages(RepositoryRoot()))
        {
            foreach (Fence fence in Fences(page))
            {
                if (fence.Language.Length == 0)
                {
                    problems.Add($"{fence.Where}: a code fence needs a language (csharp, sh, sql, ...)");
                }
                else if (IsCSharp(fence.Language))
                {
                    blocks++;
                    if (!SnippetMarker().IsMatch(fence.Marker) && fence.Marker != SignaturesMarker)
                    {
                        problems.Add($"{fence.Where}: a csharp block must follow '<!-- snippet: NAME -->' or '{SignaturesMarker}'");
                    }
                }
            }
        }

        problems.Should().BeEmpty("every C# block in the docs is a compiled snippet or a list of real signatures");
        blocks.Should().BePositive();
    }

    [Fact]
    public void SignatureBlocks_ShowRealDeclarations()
    {
        string root = RepositoryRoot();
        HashSet<string> declarations = PublicDeclarations(root);
        var problems = new List<string>();
        int checkedDeclarations = 0;
        foreach (string page in DocPages(root))
        {
            foreach (Fence fence in Fences(page).Where(f => f.Marker == SignaturesMarker))
            {
                List<string> shown = Declarations(fence.Code);
                if (shown.Count == 0 || string.Join(" ", shown) != Normalize(fence.Code))
                {
                    problems.Add($"{fence.Where}: a signatures block holds only 'public' declarations");
                }

                foreach (string declaration in shown)
                {
                    checkedDeclarations++;
                    if (!declarations.Contains(declaration))
                    {
                        problems.Add($"{fence.Where}: no such public declaration in src/: {declaration}");
                    }
                }
            }
        }

        problems.Should().BeEmpty("a signature shown in the docs must be the one in the code");
        checkedDeclarations.Should().BePositive();
    }

    private const string SignaturesMarker = "<!-- signatures -->";

    private sealed record Fence(string Where, string Language, string Marker, string Code);

    /// <summary>The code blocks of a page: each opening fence's language, the line just above it, and its code.</summary>
    private static IEnumerable<Fence> Fences(string page)
    {
        string[] lines = File.ReadAllText(page).Replace("\r\n", "\n").Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].Trim();
            if (!line.StartsWith("```", StringComparison.Ordinal))
            {
                continue;
            }

            int end = Array.FindIndex(lines, i + 1, l => l.Trim() == "```");
            if (end < 0)
            {
                throw new InvalidOperationException($"{page}:{i + 1}: code fence never closed");
            }

            string marker = i > 0 ? lines[i - 1].Trim() : "";
            yield return new Fence($"{Path.GetRelativePath(RepositoryRoot(), page)}:{i + 1}", line[3..].Trim(), marker, string.Join("\n", lines[(i + 1)..end]));
            i = end;
        }
    }

    private static bool IsCSharp(string language) =>
        language.ToLowerInvariant() is "csharp" or "cs" or "c#";

    /// <summary>
    /// Every declaration in <paramref name="code"/> that starts with <c>public</c>, from there to the parenthesis that
    /// closes its parameter list, whitespace normalized. The parameter list is the first parenthesis outside angle
    /// brackets that follows a name or a type argument list (a tuple return type's parenthesis follows a space).
    /// </summary>
    private static List<string> Declarations(string code)
    {
        var found = new List<string>();
        for (Match m = PublicKeyword().Match(code); m.Success; m = PublicKeyword().Match(code, m.Index + 1))
        {
            int end = ParameterListEnd(code, m.Index);
            if (end < 0)
            {
                continue;
            }

            found.Add(Normalize(code[m.Index..(end + 1)]));
        }

        return found;
    }

    /// <summary>The index of the parenthesis that closes the parameter list of the declaration at <paramref name="start"/>, or -1.</summary>
    private static int ParameterListEnd(string code, int start)
    {
        int angles = 0;
        int parens = 0;
        bool inParameters = false;
        for (int i = start; i < code.Length; i++)
        {
            switch (code[i])
            {
                case '<' when !inParameters:
                    angles++;
                    break;
                case '>' when !inParameters:
                    angles--;
                    break;
                case '(':
                    if (parens == 0 && angles == 0 && !inParameters && (char.IsLetterOrDigit(code[i - 1]) || code[i - 1] is '_' or '>'))
                    {
                        inParameters = true;
                    }

                    parens++;
                    break;
                case ')':
                    parens--;
                    if (parens == 0 && inParameters)
                    {
                        return i;
                    }

                    break;
                case ';' or '{' or '=' when parens == 0 && !inParameters:
                    return -1; // a field, property or event: no parameter list
            }
        }

        return -1;
    }

    /// <summary>Whitespace collapsed; a default value's null-forgiving <c>default!</c> reads as <c>default</c>.</summary>
    private static string Normalize(string code) =>
        Whitespace().Replace(code, " ").Replace("( ", "(").Replace(" )", ")").Replace("default!", "default").Trim();

    private static HashSet<string> PublicDeclarations(string root)
    {
        var declarations = new HashSet<string>(StringComparer.Ordinal);
        foreach (string file in SourceFiles(Path.Combine(root, "src")))
        {
            string code = string.Join("\n", File.ReadAllLines(file).Where(l => !l.TrimStart().StartsWith("//", StringComparison.Ordinal)));
            declarations.UnionWith(Declarations(code));
        }

        return declarations;
    }

    private static IEnumerable<string> DocPages(string root)
    {
        yield return Path.Combine(root, "README.md");
        foreach (string page in Directory.EnumerateFiles(Path.Combine(root, "docs"), "*.md"))
        {
            yield return page;
        }

        foreach (string project in Directory.EnumerateDirectories(Path.Combine(root, "src")))
        {
            string readme = Path.Combine(project, "README.md");
            if (File.Exists(readme))
            {
                yield return readme;
            }
        }
    }

    private static IEnumerable<string> SourceFiles(string path) =>
        Directory.EnumerateFiles(path, "*.cs", SearchOption.AllDirectories).Where(file =>
            !file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") &&
            !file.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"));

    private static Dictionary<string, string> ReadSnippets(string root)
    {
        var snippets = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string dir in new[] { "tests", "samples", "src" })
        {
            string path = Path.Combine(root, dir);
            if (!Directory.Exists(path))
            {
                continue;
            }

            foreach (string file in SourceFiles(path))
            {
                string[] lines = File.ReadAllText(file).Replace("\r\n", "\n").Split('\n');
                for (int i = 0; i < lines.Length; i++)
                {
                    Match start = RegionStart().Match(lines[i]);
                    if (!start.Success)
                    {
                        continue;
                    }

                    int end = Array.FindIndex(lines, i + 1, l => l.Trim() == "// end doc");
                    if (end < 0)
                    {
                        throw new InvalidOperationException($"{file}:{i + 1}: '// doc:' without '// end doc'");
                    }

                    snippets[start.Groups["name"].Value] = Dedent(lines[(i + 1)..end]);
                    i = end;
                }
            }
        }

        return snippets;
    }

    private static string Dedent(string[] lines)
    {
        int indent = lines.Where(l => l.Trim().Length > 0).Select(l => l.Length - l.TrimStart().Length).DefaultIfEmpty(0).Min();
        var sb = new StringBuilder();
        foreach (string line in lines)
        {
            sb.Append(line.Length >= indent ? line[indent..].TrimEnd() : line.Trim()).Append('\n');
        }

        return sb.ToString();
    }

    private static string RepositoryRoot([CallerFilePath] string thisFile = "")
    {
        for (DirectoryInfo? dir = new(Path.GetDirectoryName(thisFile)!); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "AsyncTools.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("AsyncTools.sln not found");
    }

    [GeneratedRegex(@"^\s*// doc: (?<name>[\w.-]+)\s*$")]
    private static partial Regex RegionStart();

    [GeneratedRegex(@"<!-- snippet: (?<name>[\w.-]+) -->\n```csharp\n(?<code>(?:(?!```)[\s\S])*?)```")]
    private static partial Regex SnippetBlock();

    [GeneratedRegex(@"^<!-- snippet: [\w.-]+ -->$")]
    private static partial Regex SnippetMarker();

    [GeneratedRegex(@"(?<![\w.])public\s")]
    private static partial Regex PublicKeyword();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();
}
