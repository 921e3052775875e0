using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Metadata.Builders;

namespace LlmServing.ResultStore.Batches;

/// <summary>A batch (OpenAI batch object): one input file, one job row per line.</summary>
public sealed class Batch
{
    /// <summary><c>batch_…</c></summary>
    public string Id { get; set; } = "";
    public string TenantId { get; set; } = Jobs.Tenants.Default;
    /// <summary><c>/v1/chat/completions</c> or <c>/v1/completions</c>.</summary>
    public string Endpoint { get; set; } = "";
    public string InputFileId { get; set; } = "";
    public string CompletionWindow { get; set; } = "24h";
    /// <summary>See <see cref="BatchStatuses"/>.</summary>
    public string Status { get; set; } = BatchStatuses.Validating;
    /// <summary>User metadata (jsonb), returned as given.</summary>
    public string? Metadata { get; set; }
    /// <summary>File-level validation errors (jsonb list of {code, message, line}).</summary>
    public string? Errors { get; set; }
    /// <summary>Queue the batch's lines are sent to.</summary>
    public string JobQueue { get; set; } = "";
    public string? OutputFileId { get; set; }
    public string? ErrorFileId { get; set; }
    /// <summary>Lines ingested so far and the input byte offset after them: ingestion resumes there.</summary>
    public int IngestedLines { get; set; }
    public long IngestedBytes { get; set; }
    /// <summary>Total lines, known once ingestion has finished.</summary>
    public int? TotalLines { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
    public DateTimeOffset ExpiresAt { get; set; }
    public DateTimeOffset? InProgressAt { get; set; }
    public DateTimeOffset? FinalizingAt { get; set; }
    public DateTimeOffset? CompletedAt { get; set; }
    public DateTimeOffset? FailedAt { get; set; }
    public DateTimeOffset? ExpiredAt { get; set; }
    public DateTimeOffset? CancellingAt { get; set; }
    public DateTimeOffset? CancelledAt { get; set; }
    /// <summary>All lines have been sent to the broker (publishing resumes from unsent rows otherwise).</summary>
    public bool Published { get; set; }

    /// <summary>
    /// Last sign of life of this batch's ingestion (created, a chunk written, a slice of lines confirmed). A batch
    /// still validating, or running with unpublished lines, whose heartbeat is older than the stall timeout is
    /// resumed by the stalled-ingestion reaper, whatever became of the process or the Hangfire job that ran it.
    /// </summary>
    public DateTimeOffset? IngestionHeartbeatAt { get; set; }

    /// <summary>When the final status's <c>BatchCompleted</c> event was handed to the broker; null while owed (ADR 0006).</summary>
    public DateTimeOffset? EventSentAt { get; set; }

    /// <summary>Where to deliver the batch's final status as a signed webhook; null: the tenant's default, if any.</summary>
    public string? WebhookUrl { get; set; }

    /// <summary>OpenAI's <c>output_expires_after.seconds</c>: the output and error files expire this long after they are written.</summary>
    public int? OutputExpiresAfterSeconds { get; set; }
}

/// <summary>OpenAI's batch statuses.</summary>
public static class BatchStatuses
{
    public const string Validating = "validating";
    public const string Failed = "failed";
    public const string InProgress = "in_progress";
    public const string Finalizing = "finalizing";
    public const string Completed = "completed";
    public const string Expired = "expired";
    public const string Cancelling = "cancelling";
    public const string Cancelled = "cancelled";
}

internal sealed class BatchConfiguration : IEntityTypeConfiguration<Batch>
{
    public void Configure(EntityTypeBuilder<Batch> builder)
    {
        builder.ToTable("batches");
        builder.HasKey(b => b.Id);
        builder.Property(b => b.Id).HasMaxLength(64);
        builder.Property(b => b.TenantId).HasMaxLength(64);
        builder.Property(b => b.Endpoint).HasMaxLength(64);
        builder.Property(b => b.InputFileId).HasMaxLength(64);
        builder.Property(b => b.CompletionWindow).HasMaxLength(16);
        builder.Property(b => b.Status).HasMaxLength(16);
        builder.Property(b => b.Metadata).HasColumnType("jsonb");
        builder.Property(b => b.Errors).HasColumnType("jsonb");
        builder.Property(b => b.JobQueue).HasMaxLength(255);
        builder.Property(b => b.OutputFileId).HasMaxLength(64);
        builder.Property(b => b.ErrorFileId).HasMaxLength(64);
        builder.HasIndex(b => new { b.TenantId, b.CreatedAt });
        builder.HasIndex(b => b.Status);
        builder.Property(b => b.WebhookUrl).HasMaxLength(2048);
        builder.HasIndex(b => b.CreatedAt)
            .HasDatabaseName("ix_batches_event_owed")
            .HasFilter("event_sent_at IS NULL AND status IN " + StatusSql.FinalBatches);
    }
}
