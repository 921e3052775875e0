using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Metadata.Builders;

namespace LlmServing.ResultStore.Webhooks;

/// <summary>A tenant's webhook settings: its default target and its signing secret. Row of <c>tenant_webhooks</c>.</summary>
public sealed class TenantWebhook
{
    public string TenantId { get; set; } = "";

    /// <summary>Where the tenant's final job and batch states go when the job or batch names no target.</summary>
    public string? Url { get; set; }

    /// <summary>
    /// The Standard Webhooks signing secret (<c>whsec_</c> + base64). Kept as written: signing needs the key itself.
    /// Shown to the tenant once, when issued.
    /// </summary>
    public string? Secret { get; set; }

    public DateTimeOffset UpdatedAt { get; set; }
}

/// <summary>One webhook message to one target, with its attempts. Row of <c>webhook_deliveries</c>.</summary>
public sealed class WebhookDelivery
{
    /// <summary>Also the <c>webhook-id</c> header (as <c>msg_</c> + hex): the same on every attempt, so receivers deduplicate.</summary>
    public Guid Id { get; set; }

    public string TenantId { get; set; } = "";

    /// <summary><c>job.completed</c>, <c>job.failed</c>, <c>job.cancelled</c>, <c>job.expired</c>, <c>batch.completed</c>, ...</summary>
    public string EventType { get; set; } = "";

    /// <summary>The job id or the batch id.</summary>
    public string SubjectId { get; set; } = "";

    public string Url { get; set; } = "";

    /// <summary>The exact body sent (and signed) on every attempt.</summary>
    public string Payload { get; set; } = "";

    /// <summary>See <see cref="WebhookDeliveryStatuses"/>.</summary>
    public string Status { get; set; } = WebhookDeliveryStatuses.Pending;

    public int Attempts { get; set; }
    public DateTimeOffset NextAttemptAt { get; set; }
    public DateTimeOffset? LastAttemptAt { get; set; }
    public int? LastStatusCode { get; set; }
    public string? LastError { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
    public DateTimeOffset? DeliveredAt { get; set; }
}

public static class WebhookDeliveryStatuses
{
    public const string Pending = "pending";
    public const string Delivered = "delivered";

    /// <summary>Final: every attempt within the retry window failed.</summary>
    public const string Failed = "failed";
}

internal sealed class TenantWebhookConfiguration : IEntityTypeConfiguration<TenantWebhook>
{
    public void Configure(EntityTypeBuilder<TenantWebhook> builder)
    {
        builder.ToTable("tenant_webhooks");
        builder.HasKey(w => w.TenantId);
        builder.Property(w => w.TenantId).HasMaxLength(64);
        builder.Property(w => w.Url).HasMaxLength(2048);
        builder.Property(w => w.Secret).HasMaxLength(128);
    }
}

internal sealed class WebhookDeliveryConfiguration : IEntityTypeConfiguration<WebhookDelivery>
{
    public void Configure(EntityTypeBuilder<WebhookDelivery> builder)
    {
        builder.ToTable("webhook_deliveries");
        builder.HasKey(d => d.Id);
        builder.Property(d => d.TenantId).HasMaxLength(64);
        builder.Property(d => d.EventType).HasMaxLength(32);
        builder.Property(d => d.SubjectId).HasMaxLength(64);
        builder.Property(d => d.Url).HasMaxLength(2048);
        builder.Property(d => d.Status).HasMaxLength(16);
        builder.Property(d => d.LastError).HasMaxLength(512);
        builder.HasIndex(d => d.NextAttemptAt).HasDatabaseName("ix_webhook_deliveries_due").HasFilter("status = 'pending'");
        builder.HasIndex(d => new { d.TenantId, d.SubjectId });
    }
}
