using System.Collections.Concurrent;
using Prometheus;

namespace LlmServing.Producer.Background;

/// <summary>
/// Per-tenant counters of final jobs and tokens (<c>llmserving_tenant_jobs_total</c>, <c>llmserving_tenant_tokens_total</c>),
/// fed by the result-event dispatcher (each final job once, but again after a crash between its publish and its mark).
/// Cardinality is bounded: the first <c>Metrics:MaxTenantLabels</c> tenants (50) get their own label, the rest count as
/// <c>other</c>.
/// </summary>
public sealed class TenantUsageMetrics(CollectorRegistry registry, IConfiguration configuration)
{
    private readonly int _maxTenants = configuration.GetValue("Metrics:MaxTenantLabels", 50);
    private readonly ConcurrentDictionary<string, byte> _labelled = new();
    private readonly Counter _jobs = Metrics.WithCustomRegistry(registry)
        .CreateCounter("llmserving_tenant_jobs_total", "Final jobs per tenant and status.", "tenant", "status");
    private readonly Counter _tokens = Metrics.WithCustomRegistry(registry)
        .CreateCounter("llmserving_tenant_tokens_total", "Tokens of final jobs per tenant: prompt, completion, cached.", "tenant", "kind");

    public void Record(string tenant, string status, int? prompt, int? completion, int? cached)
    {
        var label = _labelled.ContainsKey(tenant) || (_labelled.Count < _maxTenants && _labelled.TryAdd(tenant, 0)) ? tenant : "other";
        _jobs.WithLabels(label, status).Inc();
        _tokens.WithLabels(label, "prompt").Inc(prompt ?? 0);
        _tokens.WithLabels(label, "completion").Inc(completion ?? 0);
        _tokens.WithLabels(label, "cached").Inc(cached ?? 0);
    }
}
