using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Metadata.Builders;

namespace LlmServing.ResultStore.Tenants;

/// <summary>Per-tenant overrides of deployment defaults. Row of <c>tenant_settings</c>; a missing row or null means the default.</summary>
public sealed class TenantSettings
{
    public string TenantId { get; set; } = "";

    /// <summary>How long final jobs are kept, in seconds (the deployment's <c>Retention:Jobs</c> when null).</summary>
    public int? JobRetentionSeconds { get; set; }

    /// <summary>The most estimated tokens of unfinished batch work the tenant may have queued (the deployment's default when null; 0: no limit).</summary>
    public long? MaxEnqueuedTokens { get; set; }

    public DateTimeOffset UpdatedAt { get; set; }
}

/// <summary>Usage of final jobs that retention has deleted, per tenant and day. Row of <c>usage_daily</c>.</summary>
public sealed class UsageDaily
{
    public string TenantId { get; set; } = "";
    public DateOnly Day { get; set; }
    public long Jobs { get; set; }
    public long PromptTokens { get; set; }
    public long CompletionTokens { get; set; }
    public long CachedTokens { get; set; }
}

internal sealed class TenantSettingsConfiguration : IEntityTypeConfiguration<TenantSettings>
{
    public void Configure(EntityTypeBuilder<TenantSettings> builder)
    {
        builder.ToTable("tenant_settings");
        builder.HasKey(t => t.TenantId);
        builder.Property(t => t.TenantId).HasMaxLength(64);
    }
}

internal sealed class UsageDailyConfiguration : IEntityTypeConfiguration<UsageDaily>
{
    public void Configure(EntityTypeBuilder<UsageDaily> builder)
    {
        builder.ToTable("usage_daily");
        builder.HasKey(u => new { u.TenantId, u.Day });
        builder.Property(u => u.TenantId).HasMaxLength(64);
    }
}

/// <summary>Reads and writes <see cref="TenantSettings"/>.</summary>
public sealed class TenantSettingsStore(IDbContextFactory<LlmServingDbContext> contexts, TimeProvider clock)
{
    public async Task<TenantSettings?> FindAsync(string tenantId, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Set<TenantSettings>().AsNoTracking().SingleOrDefaultAsync(t => t.TenantId == tenantId, ct);
    }

    /// <summary>Replaces the tenant's overrides (null fields fall back to the deployment's defaults).</summary>
    public async Task<TenantSettings> SetAsync(string tenantId, int? jobRetentionSeconds, long? maxEnqueuedTokens, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        var row = await db.Set<TenantSettings>().SingleOrDefaultAsync(t => t.TenantId == tenantId, ct);
        if (row is null)
        {
            row = new TenantSettings { TenantId = tenantId };
            db.Add(row);
        }

        row.JobRetentionSeconds = jobRetentionSeconds;
        row.MaxEnqueuedTokens = maxEnqueuedTokens;
        row.UpdatedAt = clock.GetUtcNow();
        await db.SaveChangesAsync(ct);
        return row;
    }
}
