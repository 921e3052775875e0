using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using LlmServing.Autoscaler;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// The operators' Grafana dashboard and Prometheus alert rules (infra/observability) name only metrics that the
/// processes export: a renamed metric would otherwise leave a panel empty and an alert silent, with nothing failing.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class ObservabilityTests
{
    private const string MetricPattern = "llmserving_[A-Za-z0-9_:]+";

    [Test]
    public async Task ShouldExportEveryMetricTheDashboardAndAlertsReference()
    {
        var folder = Path.Combine(Repository.Root, "infra", "observability");
        var rules = await File.ReadAllLinesAsync(Path.Combine(folder, "alert-rules.yaml"));
        var alerts = AlertBlocks(rules);
        Assert.That(alerts, Is.Not.Empty, "alert-rules.yaml has no '- alert:' rule");
        var shapeProblems = alerts.SelectMany(a => new[]
        {
            Regex.IsMatch(a.Text, @"(?m)^[ \t]*expr:[ \t]*\S") ? null : $"{a.Name}: no expr",
            Regex.IsMatch(a.Text, @"(?m)^[ \t]*for:[ \t]*\d+[smhdwy]") ? null : $"{a.Name}: no 'for' duration",
            Regex.IsMatch(a.Text, @"(?m)^[ \t]*severity:[ \t]*\S") ? null : $"{a.Name}: no severity label",
            Regex.IsMatch(a.Text, @"(?m)^[ \t]*summary:[ \t]*\S") ? null : $"{a.Name}: no summary annotation",
        }).OfType<string>().ToList();
        Assert.That(shapeProblems, Is.Empty, string.Join("; ", shapeProblems));

        var fromDashboard = DashboardExpressions(await File.ReadAllTextAsync(Path.Combine(folder, "grafana-dashboard.json")))
            .SelectMany(MetricNames).ToHashSet(StringComparer.Ordinal);
        var fromRules = RuleExpressions(rules).SelectMany(MetricNames).ToHashSet(StringComparer.Ordinal);
        Assert.That(fromDashboard, Is.Not.Empty, "no llmserving_ metric found in the dashboard's expr fields");
        Assert.That(fromRules, Is.Not.Empty, "no llmserving_ metric found in the rules' expr fields");

        var exported = new HashSet<string>(StringComparer.Ordinal);
        var queue = $"llm-jobs-test-{TestServices.RunId}-observability";
        var port = AppProcess.FreePort();
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Worker:MetricsPort"] = port.ToString() });
            await producer.Client.WaitForFinalAsync((await producer.Client.SubmitAsync(new { prompt = "Observe me", max_tokens = 5 })).Id);

            var scraped = await producer.Client.ScrapeOnceAJobIsCountedAsync(seconds: 10);

            using var scraper = new HttpClient();
            exported.UnionWith(ExportedNames(scraped));
            exported.UnionWith(ExportedNames(await scraper.GetStringAsync($"http://127.0.0.1:{port}/metrics")));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }

        // The autoscaler's gauges are static fields in prometheus-net's default registry, created with its type.
        RuntimeHelpers.RunClassConstructor(typeof(AutoscalerService).TypeHandle);
        using var stream = new MemoryStream();
        await Prometheus.Metrics.DefaultRegistry.CollectAndExportAsTextAsync(stream);
        exported.UnionWith(ExportedNames(Encoding.UTF8.GetString(stream.ToArray())));

        var missing = fromDashboard.Concat(fromRules).Where(name => !exported.Contains(name)).Distinct().Order(StringComparer.Ordinal).ToList();
        var exportedList = string.Join(", ", exported.Order(StringComparer.Ordinal));
        Assert.That(missing, Is.Empty, $"referenced by the dashboard or the alert rules but exported by no process: {string.Join(", ", missing)} (exported: {exportedList})");
    }

    /// <summary>The metric families named in a PromQL expression; a histogram's series name its family.</summary>
    private static IEnumerable<string> MetricNames(string expression) =>
        Regex.Matches(expression, MetricPattern).Select(m => Family(m.Value));

    private static string Family(string name) => Regex.Replace(name, "_(bucket|sum|count)$", "");

    /// <summary>Names from "# TYPE name kind" lines (written for a labelled family with no series yet) and sample lines.</summary>
    private static IEnumerable<string> ExportedNames(string exposition) =>
        Regex.Matches(exposition, $"(?m)^(?:# TYPE )?({MetricPattern})").Select(m => Family(m.Groups[1].Value));

    /// <summary>Every "expr" (panel targets, in rows too) and "query" (template variables) string in the dashboard.</summary>
    private static List<string> DashboardExpressions(string json)
    {
        using var document = JsonDocument.Parse(json);
        var expressions = new List<string>();
        Collect(document.RootElement);
        return expressions;

        void Collect(JsonElement element)
        {
            if (element.ValueKind == JsonValueKind.Array)
            {
                foreach (var item in element.EnumerateArray())
                {
                    Collect(item);
                }
            }
            else if (element.ValueKind == JsonValueKind.Object)
            {
                foreach (var property in element.EnumerateObject())
                {
                    if (property.Name is "expr" or "query" && property.Value.ValueKind == JsonValueKind.String)
                    {
                        expressions.Add(property.Value.GetString() ?? "");
                    }

                    Collect(property.Value);
                }
            }
        }
    }

    /// <summary>The "expr:" values of the rules: inline, or a block scalar ("|", ">") of the lines indented deeper.</summary>
    private static List<string> RuleExpressions(string[] lines)
    {
        var expressions = new List<string>();
        var i = 0;
        while (i < lines.Length)
        {
            var match = Regex.Match(lines[i], @"^(\s*)(?:-\s+)?expr:\s*(.*)$");
            i++;
            if (!match.Success)
            {
                continue;
            }

            var value = match.Groups[2].Value.Trim();
            if (!value.StartsWith('|') && !value.StartsWith('>'))
            {
                expressions.Add(value);
                continue;
            }

            var indent = match.Groups[1].Value.Length;
            var block = new StringBuilder();
            while (i < lines.Length && (lines[i].Trim().Length == 0 || Indent(lines[i]) > indent))
            {
                block.AppendLine(lines[i]);
                i++;
            }

            expressions.Add(block.ToString());
        }

        return expressions;
    }

    /// <summary>Each "- alert:" rule with its lines up to the next one.</summary>
    private static List<(string Name, string Text)> AlertBlocks(string[] lines)
    {
        var starts = Enumerable.Range(0, lines.Length).Where(i => Regex.IsMatch(lines[i], @"^\s*-\s+alert:")).ToList();
        return starts.Select((start, k) => (
            Name: Regex.Match(lines[start], @"alert:\s*(\S+)").Groups[1].Value,
            Text: string.Join('\n', lines[start..(k + 1 < starts.Count ? starts[k + 1] : lines.Length)]))).ToList();
    }

    private static int Indent(string line) => line.Length - line.TrimStart().Length;
}
