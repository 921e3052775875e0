using LlmServing.Contracts;
using LlmServing.ResultStore.Jobs;
using Microsoft.EntityFrameworkCore;
using Npgsql;
using NpgsqlTypes;

namespace LlmServing.ResultStore.Batches;

/// <summary>Request counts of a batch, exact at the time of reading.</summary>
public sealed record BatchCounts(int Total, int Completed, int Failed);

/// <summary>One line of a batch as stored: a job row (queued, or failed at once with its validation error).</summary>
public sealed record BatchLineRow(Guid JobId, int LineNumber, string? CustomId, string? Request, string? Error);

/// <summary>A finished line, read back in line order to write the output and error files.</summary>
public sealed record BatchResultRow(
    Guid JobId, int LineNumber, string? CustomId, string Status, string? OutputText, string? FinishReason,
    int? PromptTokens, int? CompletionTokens, string? Error, string? Model, DateTimeOffset? FinishedAt);

/// <summary>Batch state in PostgreSQL. Every change is one conditional statement or one transaction.</summary>
public sealed class BatchStore(NpgsqlDataSource data, IDbContextFactory<LlmServingDbContext> contexts, TimeProvider clock)
{
    private static readonly string FinalList = "('succeeded','failed','cancelled','expired')";

    public static string NewId() => $"batch_{Guid.CreateVersion7():N}";

    public async Task<Batch> CreateAsync(Batch batch, CancellationToken ct)
    {
        batch.CreatedAt = clock.GetUtcNow();
        batch.ExpiresAt = batch.CreatedAt.AddHours(24);
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

    public async Task<BatchCounts> CountsAsync(string batchId, CancellationToken ct)
    {
        await using var command = data.CreateCommand($"""
            SELECT count(*)::int,
                   count(*) FILTER (WHERE status = 'succeeded')::int,
                   count(*) FILTER (WHERE status IN ('failed','cancelled','expired'))::int
            FROM jobs WHERE batch_id = $1
            """);
        command.Parameters.AddWithValue(batchId);
        await using var reader = await command.ExecuteReaderAsync(ct);
        await reader.ReadAsync(ct);
        return new BatchCounts(reader.GetInt32(0), reader.GetInt32(1), reader.GetInt32(2));
    }

    public async Task<List<string>> CustomIdsAsync(string batchId, CancellationToken ct)
    {
        await using var command = data.CreateCommand("SELECT custom_id FROM jobs WHERE batch_id = $1 AND custom_id IS NOT NULL");
        command.Parameters.AddWithValue(batchId);
        await using var reader = await command.ExecuteReaderAsync(ct);
        var ids = new List<string>();
        while (await reader.ReadAsync(ct))
        {
            ids.Add(reader.GetString(0));
        }

        return ids;
    }

    /// <summary>
    /// Appends ingested lines with one binary COPY and moves the batch's resume point, in one transaction. Returns
    /// false (and writes nothing) when the resume point is no longer <paramref name="fromBytes"/>: another run of the
    /// ingestion got there first, or the batch is no longer validating.
    /// </summary>
    public async Task<bool> AppendLinesAsync(
        string batchId, string tenantId, long fromBytes, long toBytes, int ingestedLines, IReadOnlyList<BatchLineRow> rows, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var connection = await data.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        await using (var progress = new NpgsqlCommand(
            "UPDATE batches SET ingested_bytes = $1, ingested_lines = $2 WHERE id = $3 AND ingested_bytes = $4 AND status = 'validating'",
            connection, transaction))
        {
            progress.Parameters.AddWithValue(toBytes);
            progress.Parameters.AddWithValue(ingestedLines);
            progress.Parameters.AddWithValue(batchId);
            progress.Parameters.AddWithValue(fromBytes);
            if (await progress.ExecuteNonQueryAsync(ct) != 1)
            {
                await transaction.RollbackAsync(ct);
                return false;
            }
        }

        if (rows.Count > 0)
        {
            await using var import = await connection.BeginBinaryImportAsync(
                "COPY jobs (id, tenant_id, status, request, created_at, attempts, batch_id, custom_id, line_number, error, finished_at) FROM STDIN (FORMAT BINARY)",
                ct);
            foreach (var row in rows)
            {
                await import.StartRowAsync(ct);
                await import.WriteAsync(row.JobId, NpgsqlDbType.Uuid, ct);
                await import.WriteAsync(tenantId, NpgsqlDbType.Varchar, ct);
                await import.WriteAsync(row.Error is null ? JobStatuses.Queued : JobStatuses.Failed, NpgsqlDbType.Varchar, ct);
                await import.WriteAsync(row.Request ?? "{}", NpgsqlDbType.Jsonb, ct);
                await import.WriteAsync(now, NpgsqlDbType.TimestampTz, ct);
                await import.WriteAsync(0, NpgsqlDbType.Integer, ct);
                await import.WriteAsync(batchId, NpgsqlDbType.Varchar, ct);
                await WriteNullableAsync(import, row.CustomId, NpgsqlDbType.Varchar, ct);
                await import.WriteAsync(row.LineNumber, NpgsqlDbType.Integer, ct);
                await WriteNullableAsync(import, row.Error, NpgsqlDbType.Text, ct);
                if (row.Error is null)
                {
                    await import.WriteNullAsync(ct);
                }
                else
                {
                    await import.WriteAsync(now, NpgsqlDbType.TimestampTz, ct);
                }
            }

            await import.CompleteAsync(ct);
        }

        await transaction.CommitAsync(ct);
        return true;
    }

    /// <summary>Ends validation: the batch runs (or fails, with file-level errors as JSON).</summary>
    public async Task<bool> FinishValidationAsync(string batchId, string? errorsJson, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var command = errorsJson is null
            ? data.CreateCommand("UPDATE batches SET status = 'in_progress', in_progress_at = $2, total_lines = ingested_lines WHERE id = $1 AND status = 'validating'")
            : data.CreateCommand("UPDATE batches SET status = 'failed', failed_at = $2, errors = $3::jsonb, total_lines = 0 WHERE id = $1 AND status = 'validating'");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(now);
        if (errorsJson is not null)
        {
            command.Parameters.AddWithValue(errorsJson);
        }

        return await command.ExecuteNonQueryAsync(ct) == 1;
    }

    /// <summary>Lines accepted but not yet confirmed by the broker, in line order.</summary>
    public async Task<List<(Guid Id, string Request)>> UnpublishedAsync(string batchId, int limit, CancellationToken ct)
    {
        await using var command = data.CreateCommand(
            "SELECT id, request::text FROM jobs WHERE batch_id = $1 AND status = 'queued' AND queued_at IS NULL ORDER BY line_number LIMIT $2");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(limit);
        await using var reader = await command.ExecuteReaderAsync(ct);
        var rows = new List<(Guid, string)>();
        while (await reader.ReadAsync(ct))
        {
            rows.Add((reader.GetGuid(0), reader.GetString(1)));
        }

        return rows;
    }

    public async Task MarkQueuedAsync(IReadOnlyCollection<Guid> jobIds, CancellationToken ct)
    {
        await using var command = data.CreateCommand("UPDATE jobs SET queued_at = $2 WHERE id = ANY($1) AND queued_at IS NULL");
        command.Parameters.AddWithValue(jobIds.ToArray());
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
    /// Cancels a batch: it becomes <c>cancelling</c>, its queued lines are cancelled at once and its running lines are
    /// asked to stop; the finalizer ends it as <c>cancelled</c> with the lines that finished. Null when not found.
    /// </summary>
    public async Task<Batch?> CancelAsync(string batchId, string tenantId, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using (var command = data.CreateCommand(
            "UPDATE batches SET status = 'cancelling', cancelling_at = $3 WHERE id = $1 AND tenant_id = $2 AND status IN ('validating','in_progress')"))
        {
            command.Parameters.AddWithValue(batchId);
            command.Parameters.AddWithValue(tenantId);
            command.Parameters.AddWithValue(now);
            if (await command.ExecuteNonQueryAsync(ct) == 1)
            {
                await StopLinesAsync(batchId, JobStatuses.Cancelled, ct);
            }
        }

        return await FindAsync(batchId, tenantId, ct);
    }

    /// <summary>Queued lines end with <paramref name="status"/>; running ones are asked to stop (cancel only).</summary>
    public async Task StopLinesAsync(string batchId, string status, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var queued = data.CreateCommand("UPDATE jobs SET status = $2, finished_at = $3 WHERE batch_id = $1 AND status = 'queued'");
        queued.Parameters.AddWithValue(batchId);
        queued.Parameters.AddWithValue(status);
        queued.Parameters.AddWithValue(now);
        await queued.ExecuteNonQueryAsync(ct);
        if (status == JobStatuses.Cancelled)
        {
            await using var running = data.CreateCommand(
                "UPDATE jobs SET cancel_requested_at = $2 WHERE batch_id = $1 AND status = 'running' AND cancel_requested_at IS NULL");
            running.Parameters.AddWithValue(batchId);
            running.Parameters.AddWithValue(now);
            await running.ExecuteNonQueryAsync(ct);
        }
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

    public async Task<long> UnfinishedLinesAsync(string batchId, CancellationToken ct)
    {
        await using var command = data.CreateCommand($"SELECT count(*) FROM jobs WHERE batch_id = $1 AND status NOT IN {FinalList}");
        command.Parameters.AddWithValue(batchId);
        return (long)(await command.ExecuteScalarAsync(ct))!;
    }

    /// <summary>Claims a batch for finalization (status from <paramref name="from"/> to finalizing).</summary>
    public async Task<bool> ClaimFinalizationAsync(string batchId, string from, DateTimeOffset? previousFinalizingAt, CancellationToken ct)
    {
        await using var command = data.CreateCommand(
            "UPDATE batches SET status = 'finalizing', finalizing_at = $3 WHERE id = $1 AND status = $2 AND finalizing_at IS NOT DISTINCT FROM $4");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(from);
        command.Parameters.AddWithValue(clock.GetUtcNow());
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)previousFinalizingAt ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.TimestampTz });
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
            $"UPDATE batches SET status = $2, output_file_id = $3, error_file_id = $4, {column} = $5 WHERE id = $1 AND status = 'finalizing'");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(status);
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)outputFileId ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Varchar });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)errorFileId ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Varchar });
        command.Parameters.AddWithValue(clock.GetUtcNow());
        await command.ExecuteNonQueryAsync(ct);
    }

    /// <summary>Streams the batch's lines in line order.</summary>
    public async IAsyncEnumerable<BatchResultRow> ReadResultsAsync(string batchId, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await using var command = data.CreateCommand("""
            SELECT id, line_number, custom_id, status, output_text, finish_reason, prompt_tokens, completion_tokens, error,
                   request->>'model', finished_at
            FROM jobs WHERE batch_id = $1 ORDER BY line_number
            """);
        command.Parameters.AddWithValue(batchId);
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            yield return new BatchResultRow(
                reader.GetGuid(0), reader.GetInt32(1), reader.IsDBNull(2) ? null : reader.GetString(2), reader.GetString(3),
                reader.IsDBNull(4) ? null : reader.GetString(4), reader.IsDBNull(5) ? null : reader.GetString(5),
                reader.IsDBNull(6) ? null : reader.GetInt32(6), reader.IsDBNull(7) ? null : reader.GetInt32(7),
                reader.IsDBNull(8) ? null : reader.GetString(8), reader.IsDBNull(9) ? null : reader.GetString(9),
                reader.IsDBNull(10) ? null : reader.GetFieldValue<DateTimeOffset>(10));
        }
    }

    private static Task WriteNullableAsync(NpgsqlBinaryImporter import, string? value, NpgsqlDbType type, CancellationToken ct) =>
        value is null ? import.WriteNullAsync(ct) : import.WriteAsync(value, type, ct);
}
