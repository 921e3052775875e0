using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Metadata.Builders;

namespace LlmServing.ResultStore.Jobs;

internal sealed class JobConfiguration : IEntityTypeConfiguration<Job>
{
    public void Configure(EntityTypeBuilder<Job> builder)
    {
        builder.ToTable("jobs");
        builder.HasKey(j => j.Id);
        builder.Property(j => j.TenantId).HasMaxLength(64);
        builder.Property(j => j.Status).HasMaxLength(16);
        builder.Property(j => j.IdempotencyKey).HasMaxLength(255);
        builder.Property(j => j.RequestHash).HasMaxLength(64);
        builder.Property(j => j.Request).HasColumnType("jsonb");
        builder.Property(j => j.Logprobs).HasColumnType("jsonb");
        builder.Property(j => j.Choices).HasColumnType("jsonb");
        builder.Property(j => j.FinishReason).HasMaxLength(16);
        builder.Property(j => j.WorkerId).HasMaxLength(128);
        builder.HasIndex(j => new { j.TenantId, j.IdempotencyKey })
            .IsUnique()
            .HasFilter("idempotency_key IS NOT NULL");
        // The publish sweep looks for accepted jobs the broker never confirmed.
        // (Interactive jobs only: batch lines are the batch releaser's, ADR 0007; a batch COPY then maintains one index less.)
        builder.HasIndex(j => j.CreatedAt)
            .HasDatabaseName("ix_jobs_unpublished")
            .HasFilter("queued_at IS NULL AND status = 'queued' AND batch_id IS NULL");
        builder.HasIndex(j => j.Status);
        builder.Property(j => j.BatchId).HasMaxLength(64);
        builder.Property(j => j.CustomId).HasMaxLength(512);
        builder.HasIndex(j => new { j.BatchId, j.LineNumber }).HasFilter("batch_id IS NOT NULL");
        builder.HasIndex(j => j.Deadline)
            .HasDatabaseName("ix_jobs_queued_deadline")
            .HasFilter("status = 'queued' AND deadline IS NOT NULL");
        builder.Property(j => j.Queue).HasMaxLength(255);
        // The reaper looks for running jobs whose lease lapsed.
        builder.HasIndex(j => j.LeaseExpiresAt)
            .HasDatabaseName("ix_jobs_running_lease")
            .HasFilter("status = 'running'");
        builder.Property(j => j.WebhookUrl).HasMaxLength(2048);
        // Retention and usage read final jobs by when they finished.
        builder.HasIndex(j => j.FinishedAt)
            .HasDatabaseName("ix_jobs_final_finished")
            .HasFilter("status IN " + StatusSql.FinalJobs);
        // Listing a tenant's jobs, newest first (GET /v1/jobs; batch lines are listed only on request).
        builder.HasIndex(j => new { j.TenantId, j.Id })
            .HasDatabaseName("ix_jobs_tenant_interactive")
            .HasFilter("batch_id IS NULL");
        // The age of the oldest queued interactive job (a metric), without scanning.
        // (Named in the model: another index, ix_jobs_unpublished, is on created_at too.)
        builder.HasIndex(j => j.CreatedAt, "ix_jobs_queued_interactive")
            .HasDatabaseName("ix_jobs_queued_interactive")
            .HasFilter("status = 'queued' AND batch_id IS NULL");
        // Fair share (ADR 0007): a tenant's batch lines waiting in PostgreSQL, and those sent or running.
        builder.HasIndex(j => new { j.TenantId, j.BatchId, j.LineNumber })
            .HasDatabaseName("ix_jobs_batch_backlog")
            .HasFilter("status = 'queued' AND queued_at IS NULL AND batch_id IS NOT NULL");
        builder.HasIndex(j => j.TenantId)
            .HasDatabaseName("ix_jobs_batch_inflight")
            .HasFilter("batch_id IS NOT NULL AND (status = 'running' OR (status = 'queued' AND queued_at IS NOT NULL))");
        // The event dispatcher looks for final jobs whose event is owed.
        builder.HasIndex(j => j.Id)
            .HasDatabaseName("ix_jobs_event_owed")
            .HasFilter("event_sent_at IS NULL AND status IN " + StatusSql.FinalJobs);
    }
}
