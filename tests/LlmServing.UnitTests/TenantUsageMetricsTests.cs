using Microsoft.Extensions.Configuration;
using Prometheus;
using LlmServing.Producer.Background;

namespace LlmServing.Tests;

/// <summary>Per-tenant counters keep Prometheus' cardinality bounded: tenants past the limit count as "other".</summary>
public sealed class TenantUsageMetricsTests
{
    [Test]
    public async Task ShouldCountTenantsPastTheLimitAsOther()
    {
        var registry = Metrics.NewCustomRegistry();
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["Metrics:MaxTenantLabels"] = "2" }).Build();
        var metrics = new TenantUsageMetrics(registry, configuration);

        metrics.Record("a", "succeeded", 10, 5, 0);
        metrics.Record("b", "succeeded", 10, 5, 0);
        metrics.Record("c", "failed", 7, 0, 0);
        metrics.Record("d", "succeeded", 1, 2, 0);
        metrics.Record("a", "succeeded", 10, 5, 3);
        using var stream = new MemoryStream();
        await registry.CollectAndExportAsTextAsync(stream);
        var text = System.Text.Encoding.UTF8.GetString(stream.ToArray());

        Assert.That(text, Does.Contain("llmserving_tenant_tokens_total{tenant=\"a\",kind=\"completion\"} 10"));
        Assert.That(text, Does.Contain("llmserving_tenant_tokens_total{tenant=\"other\",kind=\"prompt\"} 8"));
        Assert.That(text, Does.Contain("llmserving_tenant_jobs_total{tenant=\"other\",status=\"failed\"} 1"));
        Assert.That(text, Does.Not.Contain("tenant=\"c\"").And.Not.Contain("tenant=\"d\""));
    }
}
