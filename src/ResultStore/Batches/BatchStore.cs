using Microsoft.EntityFrameworkCore;
using Npgsql;
using NpgsqlTypes;

namespace LlmServing.ResultStore.Batches;

/// <summary>
/// The <c>batches</c> table: a batch's own state (validating, in progress, finalizing, ...), its resume point and its
/// ingestion heartbeat. Every change is one conditional statement. The job rows of a batch's lines live in
/// <see cref="BatchLineStore"/>.
/// </summary>
public sealed class BatchStore(NpgsqlDataSource data, IDbContextFactory<LlmServingDbContext> contexts, TimeProvider clock)
{
    public static string NewId() => $"batch_{Guid.CreateVersion7():N}";

    public async Task<Batch> CreateAsync(Batch batch, CancellationToken ct)
    {
        batch.CreatedAt = clock.GetUtcNow();
        batch.ExpiresAt = batch.CreatedAt.AddHours(24);
        batch.IngestionHeartbeatAt = batch.CreatedAt;
        await using var db = await contexts.CreateDbContextAsync(ct);
        db.Batches.Add(batch);
        await db.SaveChangesAsync(ct);
        return batch;
    }

    public async Task<Batch?> FindAsync(string id, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Batches.AsNoTracking().SingleOrDefaultAsync(b => b.Id == id, ct);
    }

    public async Task<Batch?> FindAsync(string id, string tenantId, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Batches.AsNoTracking().SingleOrDefaultAsync(b => b.Id == id && b.TenantId == tenantId, ct);
    }

    /// <summary>Newest first; <paramref name="after"/> is the last id of the previous page.</summary>
    public async Task<List<Batch>> ListAsync(string tenantId, string? after, int limit, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        var query = db.Batches.AsNoTracking().Where(b => b.TenantId == tenantId);
        if (after is not null)
        {
            // Ids are time-ordered (UUIDv7), so "older than the cursor" is an id comparison.
            query = query.Where(b => string.Compare(b.Id, after) < 0);
        }

        return await query.OrderByDescending(b => b.Id).Take(limit).ToListAsync(ct);
    }

    /// <summary>Ends validation: the batch runs (or fails, with file-level errors as JSON).</summary>
    public async Task<bool> FinishValidationAsync(string batchId, string? errorsJson, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var command = errorsJson is null
            ? data.CreateCommand("UPDATE batches SET status = $3, in_progress_at = $2, ingestion_heartbeat_at = $2, total_lines = ingested_lines WHERE id = $1 AND status = $4")
            : data.CreateCommand("UPDATE batches SET status = $3, failed_at = $2, errors = $5::jsonb, total_lines = 0 WHERE id = $1 AND status = $4");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(now);
        command.Parameters.AddWithValue(errorsJson is null ? BatchStatuses.InProgress : BatchStatuses.Failed);
        command.Parameters.AddWithValue(BatchStatuses.Validating);
        if (errorsJson is not null)
        {
            command.Parameters.AddWithValue(errorsJson);
        }

        return await command.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>Records that the batch's ingestion is alive (a slice of lines was confirmed by the broker).</summary>
    public async Task TouchIngestionAsync(string batchId, CancellationToken ct)
    {
        await using var command = data.CreateCommand("UPDATE batches SET ingestion_heartbeat_at = $2 WHERE id = $1");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(clock.GetUtcNow());
        await command.ExecuteNonQueryAsync(ct);
    }

    public async Task MarkAllPublishedAsync(string batchId, CancellationToken ct)
    {
        await using var command = data.CreateCommand("UPDATE batches SET published = true WHERE id = $1");
        command.Parameters.AddWithValue(batchId);
        await command.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// Claims the batches of the given line queue whose ingestion stalled: still validating, or running with lines
    /// not yet confirmed by the broker, and no sign of life since <paramref name="staleBefore"/> (the process running
    /// the ingestion died, its Hangfire job was lost, or the enqueue never happened). The claim moves the heartbeat
    /// to now, so one replica resumes a batch and the next claim waits for another stall timeout.
    /// </summary>
    public async Task<List<string>> ClaimStalledIngestionAsync(string jobQueue, DateTimeOffset staleBefore, CancellationToken ct)
    {
        await using var command = data.CreateCommand("""
            UPDATE batches SET ingestion_heartbeat_at = $3
            WHERE job_queue = $1 AND (ingestion_heartbeat_at IS NULL OR ingestion_heartbeat_at < $2)
              AND (status = $4 OR (status = $5 AND NOT published))
            RETURNING id
            """);
        command.Parameters.AddWithValue(jobQueue);
        command.Parameters.AddWithValue(staleBefore);
        command.Parameters.AddWithValue(clock.GetUtcNow());
        command.Parameters.AddWithValue(BatchStatuses.Validating);
        command.Parameters.AddWithValue(BatchStatuses.InProgress);
        await using var reader = await command.ExecuteReaderAsync(ct);
        var ids = new List<string>();
        while (await reader.ReadAsync(ct))
        {
            ids.Add(reader.GetString(0));
        }

        return ids;
    }

    /// <summary>
    /// Moves a validating or running batch to <c>cancelling</c>; the caller then stops its lines, and the finalizer
    /// ends it as <c>cancelled</c> with the lines that finished. False when the batch was in another state.
    /// </summary>
    public async Task<bool> MarkCancellingAsync(string batchId, string tenantId, CancellationToken ct)
    {
        await using var command = data.CreateCommand(
            "UPDATE batches SET status = $4, cancelling_at = $3 WHERE id = $1 AND tenant_id = $2 AND status IN ($5, $6)");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(tenantId);
        command.Parameters.AddWithValue(clock.GetUtcNow());
        command.Parameters.AddWithValue(BatchStatuses.Cancelling);
        command.Parameters.AddWithValue(BatchStatuses.Validating);
        command.Parameters.AddWithValue(BatchStatuses.InProgress);
        return await command.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>
    /// Batches still validating past their completion window stop ingesting: they move to <c>in_progress</c> with the
    /// lines ingested so far, and the finalizer expires them like any batch past its window. Returns how many.
    /// </summary>
    public async Task<int> EndOverdueValidationAsync(CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var command = data.CreateCommand(
            "UPDATE batches SET status = $2, in_progress_at = $1, total_lines = ingested_lines WHERE status = $3 AND expires_at < $1");
        command.Parameters.AddWithValue(now);
        command.Parameters.AddWithValue(BatchStatuses.InProgress);
        command.Parameters.AddWithValue(BatchStatuses.Validating);
        return await command.ExecuteNonQueryAsync(ct);
    }

    /// <summary>Batches that may be ready to end: running or cancelling, or stuck finalizing (a crash mid-way).</summary>
    public async Task<List<Batch>> OpenBatchesAsync(CancellationToken ct)
    {
        var stale = clock.GetUtcNow().AddMinutes(-5);
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Batches.AsNoTracking()
            .Where(b => b.Status == BatchStatuses.InProgress || b.Status == BatchStatuses.Cancelling
                        || (b.Status == BatchStatuses.Finalizing && b.FinalizingAt < stale))
            .ToListAsync(ct);
    }

    /// <summary>Claims a batch for finalization (status from <paramref name="from"/> to finalizing).</summary>
    public async Task<bool> ClaimFinalizationAsync(string batchId, string from, DateTimeOffset? previousFinalizingAt, CancellationToken ct)
    {
        await using var command = data.CreateCommand(
            "UPDATE batches SET status = $5, finalizing_at = $3 WHERE id = $1 AND status = $2 AND finalizing_at IS NOT DISTINCT FROM $4");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(from);
        command.Parameters.AddWithValue(clock.GetUtcNow());
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)previousFinalizingAt ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.TimestampTz });
        command.Parameters.AddWithValue(BatchStatuses.Finalizing);
        return await command.ExecuteNonQueryAsync(ct) == 1;
    }

    public async Task CompleteFinalizationAsync(string batchId, string status, string? outputFileId, string? errorFileId, CancellationToken ct)
    {
        var column = status switch
        {
            BatchStatuses.Cancelled => "cancelled_at",
            BatchStatuses.Expired => "expired_at",
            _ => "completed_at",
        };
        await using var command = data.CreateCommand(
            $"UPDATE batches SET status = $2, output_file_id = $3, error_file_id = $4, {column} = $5 WHERE id = $1 AND status = $6");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(status);
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)outputFileId ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Varchar });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)errorFileId ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Varchar });
        command.Parameters.AddWithValue(clock.GetUtcNow());
        command.Parameters.AddWithValue(BatchStatuses.Finalizing);
        await command.ExecuteNonQueryAsync(ct);
    }
}
