using System.Text.RegularExpressions;

namespace LlmServing.Tests;

/// <summary>
/// The Producer's folders are its layers (ADR 0009): adapters (<c>Http</c>, <c>Http/OpenAi</c>, the console) over use
/// cases (<c>Application</c>) over the broker and notifications (<c>Messaging</c>), with <c>Background</c> work beside the
/// adapters. Dependencies point one way; no folder imports a sibling. Read from the sources, so a new folder or a new
/// import shows here before review.
/// </summary>
public sealed partial class ProducerLayersTests
{
    /// <summary>What each layer may import of the Producer (the root namespace, which holds options and composition, is open to all).</summary>
    private static readonly Dictionary<string, string[]> Allowed = new()
    {
        ["Messaging"] = [],
        ["Application"] = ["Messaging"],
        ["Background"] = ["Application", "Messaging"],
        ["Http"] = ["Application", "Messaging"],
        ["Http.OpenAi"] = ["Http", "Application", "Messaging"],
        ["OperatorConsole"] = ["Application", "Messaging"],
        ["Pages.Console"] = ["OperatorConsole", "Application", "Messaging"],
    };

    [Test]
    public void ShouldImportOnlyLowerLayers_WhenAnyProducerSourceIsRead()
    {
        var violations = new List<string>();
        foreach (var (file, layer, imports) in Sources())
        {
            if (layer is null)
            {
                continue; // the composition root wires every layer
            }

            if (!Allowed.TryGetValue(layer, out var allowed))
            {
                violations.Add($"{file}: namespace {layer} is not a layer of ADR 0009");
                continue;
            }

            violations.AddRange(imports.Where(i => i != layer && !layer.StartsWith(i + ".", StringComparison.Ordinal) && !allowed.Contains(i))
                .Select(i => $"{file}: {layer} imports {i}"));
        }

        Assert.That(violations, Is.Empty);
    }

    [Test]
    public void ShouldFindTheImports_WhenASourceNamesAnotherLayer()
    {
        // The reader itself: a using directive and a qualified name both count, so the test above can fail.
        const string source = "using LlmServing.Producer.Http;\nnamespace LlmServing.Producer.Application;\nclass A { LlmServing.Producer.Background.X x; }";

        var (layer, imports) = Read(source);

        Assert.That(layer, Is.EqualTo("Application"));
        Assert.That(imports, Is.EquivalentTo(new[] { "Http", "Background" }));
    }

    private static IEnumerable<(string File, string? Layer, HashSet<string> Imports)> Sources()
    {
        var root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "LlmServing.sln")))
        {
            root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("LlmServing.sln not found above the test binaries");
        }

        var producer = Path.Combine(root, "src", "Producer");
        foreach (var file in Directory.EnumerateFiles(producer, "*.cs", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(producer, file);
            if (relative.StartsWith("obj", StringComparison.Ordinal) || relative.StartsWith("bin", StringComparison.Ordinal))
            {
                continue;
            }

            var (layer, imports) = Read(File.ReadAllText(file));
            yield return (relative, layer, imports);
        }
    }

    private static (string? Layer, HashSet<string> Imports) Read(string source)
    {
        var ns = NamespaceLine().Match(source);
        var layer = ns.Success && ns.Groups[1].Value.Length > 0 ? ns.Groups[1].Value.TrimStart('.') : null;
        var imports = UsingLine().Matches(source).Select(m => m.Groups[1].Value)
            .Concat(QualifiedName().Matches(source).Select(m => m.Groups[1].Value))
            .Select(name => Allowed.Keys.Where(k => name == k || name.StartsWith(k + ".", StringComparison.Ordinal)).MaxBy(k => k.Length) ?? name)
            .ToHashSet();
        return (layer, imports);
    }

    [GeneratedRegex(@"^namespace LlmServing\.Producer((?:\.[A-Za-z]+)*);", RegexOptions.Multiline)]
    private static partial Regex NamespaceLine();

    [GeneratedRegex(@"^using LlmServing\.Producer\.([A-Za-z.]+);", RegexOptions.Multiline)]
    private static partial Regex UsingLine();

    [GeneratedRegex(@"(?<!^using |namespace )LlmServing\.Producer\.((?:[A-Z][A-Za-z]*\.)*[A-Z][A-Za-z]*)\.[A-Z]\w*", RegexOptions.Multiline)]
    private static partial Regex QualifiedName();
}
