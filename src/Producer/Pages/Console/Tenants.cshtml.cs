using LlmServing.ResultStore.Retention;
using LlmServing.ResultStore.Tenants;
using Microsoft.AspNetCore.Mvc;
using LlmServing.Producer.Application;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer.Pages.Console;

public sealed record TenantRow(string Tenant, int ActiveKeys, long Jobs, long PromptTokens, long CompletionTokens, TenantSettings? Settings);

/// <summary>Admin only: tenants' usage and limits, and their API keys (create, shown once; revoke).</summary>
public sealed class TenantsModel(ConsoleQueries queries, ApiKeyStore keys, TenantSettingsStore settings, RetentionStore usage, TimeProvider clock)
    : ConsolePageModel
{
    public const int UsageDays = 30;

    public List<TenantRow> Rows { get; } = [];

    public List<ApiKey> Keys { get; private set; } = [];

    public string? NewKey { get; private set; }

    public string? NewKeyTenant { get; private set; }

    public async Task<IActionResult> OnGetAsync(CancellationToken ct)
    {
        if (RequireAdmin() is { } forbidden)
        {
            return forbidden;
        }

        await LoadAsync(ct);
        return Page();
    }

    public async Task<IActionResult> OnPostCreateAsync([FromForm] string? tenant, CancellationToken ct)
    {
        if (RequireAdmin() is { } forbidden)
        {
            return forbidden;
        }

        tenant = tenant?.Trim();
        if (Viewer.KeysOff)
        {
            return Back("/console/tenants", "Keys need Producer:AdminKey.");
        }

        if (TenantIds.Problem(tenant) is { } problem)
        {
            return Back("/console/tenants", problem);
        }

        // Rendered, not redirected: the key must never appear in a URL or a later page.
        (_, NewKey) = await keys.CreateAsync(tenant!, ct);
        NewKeyTenant = tenant;
        await LoadAsync(ct);
        return Page();
    }

    public async Task<IActionResult> OnPostRevokeAsync([FromForm(Name = "key_id")] Guid keyId, CancellationToken ct)
    {
        if (RequireAdmin() is { } forbidden)
        {
            return forbidden;
        }

        return Back("/console/tenants", await keys.RevokeAsync(keyId, ct) ? "Key revoked." : "That key is already revoked.");
    }

    public async Task<IActionResult> OnPostLimitsAsync(
        [FromForm] string tenant, [FromForm(Name = "retention_days")] string? retentionDays, [FromForm(Name = "max_enqueued_tokens")] string? maxTokens,
        CancellationToken ct)
    {
        if (RequireAdmin() is { } forbidden)
        {
            return forbidden;
        }

        if (TenantIds.Problem(tenant) is { } invalid)
        {
            return Back("/console/tenants", invalid);
        }

        int? days = null;
        long? tokens = null;
        if (!string.IsNullOrWhiteSpace(retentionDays))
        {
            if (!int.TryParse(retentionDays, out var d) || !TenantSettingsRule.IsValid(d, null))
            {
                return Back("/console/tenants", "Job retention is 1 to 3650 days, or empty for the deployment's default.");
            }

            days = d;
        }

        if (!string.IsNullOrWhiteSpace(maxTokens))
        {
            if (!long.TryParse(maxTokens, out var t) || !TenantSettingsRule.IsValid(null, t))
            {
                return Back("/console/tenants", "Max enqueued tokens is 0 (no limit) or more, or empty for the deployment's default.");
            }

            tokens = t;
        }

        await settings.SetAsync(tenant, days * 86_400, tokens, ct);
        return Back("/console/tenants", $"Limits of {tenant} saved.");
    }

    private async Task LoadAsync(CancellationToken ct)
    {
        Keys = await keys.ListAsync(ct);
        var today = DateOnly.FromDateTime(clock.GetUtcNow().UtcDateTime);
        var rows = await usage.UsageAsync(null, today.AddDays(-UsageDays + 1), today, ct);
        foreach (var tenant in await queries.TenantsAsync(ct))
        {
            var mine = rows.Where(r => r.TenantId == tenant).ToList();
            Rows.Add(new TenantRow(tenant, Keys.Count(k => k.TenantId == tenant && k.RevokedAt is null),
                mine.Sum(r => r.Jobs), mine.Sum(r => r.PromptTokens), mine.Sum(r => r.CompletionTokens), await settings.FindAsync(tenant, ct)));
        }
    }
}
