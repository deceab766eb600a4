using System.Runtime.CompilerServices;
using System.Text;
using System.Text.RegularExpressions;

namespace AsyncPrimitives.Tests;

/// <summary>
/// Keeps the code in README.md and docs/*.md identical to code that compiles and runs: every
/// <c>&lt;!-- snippet: NAME --&gt;</c> marker in a page must be followed by a csharp code block equal to the
/// <c>// doc: NAME</c> ... <c>// end doc</c> region of a test, sample or library source file. Run with ASYNCTOOLS_ACCEPT_DOCS=1 to
/// rewrite the pages' blocks from the sources.
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

    private static IEnumerable<string> DocPages(string root)
    {
        yield return Path.Combine(root, "README.md");
        foreach (string page in Directory.EnumerateFiles(Path.Combine(root, "docs"), "*.md"))
        {
            yield return page;
        }
    }

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

            foreach (string file in Directory.EnumerateFiles(path, "*.cs", SearchOption.AllDirectories))
            {
                if (file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") ||
                    file.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
                {
                    continue;
                }

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
}
