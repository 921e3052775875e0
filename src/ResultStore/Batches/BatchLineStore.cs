using LlmServing.Contracts;
using Npgsql;
using NpgsqlTypes;

namespace LlmServing.ResultStore.Batches;

/// <summary>Request counts of a batch, exact at the time of reading.</summary>
public sealed record BatchCounts(int Total, int Completed, int Failed)
{
    /// <summary>Token sums over the batch's lines so far (OpenAI's batch <c>usage</c>).</summary>
    public long PromptTokens { get; init; }

    public long CompletionTokens { get; init; }

    public long CachedTokens { get; init; }
}

/// <summary>One line of a batch as stored: a job row (queued, or failed at once with its validation error).</summary>
/// <param name="EstimatedTokens">Prompt characters / 4 + max_tokens (for every choice): what the line weighs against its tenant's quota.</param>
public sealed record BatchLineRow(Guid JobId, int LineNumber, string? CustomId, string? Request, string? Error, int EstimatedTokens = 0);

/// <summary>A finished line, read back in line order to write the output and error files.</summary>
public sealed record BatchResultRow(
    Guid JobId, int LineNumber, string? CustomId, string Status, string? OutputText, string? FinishReason,
    int? PromptTokens, int? CompletionTokens, string? Error, string? Model, DateTimeOffset? FinishedAt, int? CachedTokens = null, string? Logprobs = null, string? Choices = null);

/// <summary>
/// The lines of batches: their job rows in <c>jobs</c> (<c>batch_id</c> set). Appends by binary COPY together with
/// the batch's resume point, publishing state, stopping, counting and reading results in line order. Statuses come
/// from <see cref="JobStatuses"/>, passed as parameters.
/// </summary>
public sealed class BatchLineStore(NpgsqlDataSource data, TimeProvider clock)
{
    public async Task<BatchCounts> CountsAsync(string batchId, CancellationToken ct)
    {
        await using var command = data.CreateCommand("""
            SELECT count(*)::int,
                   count(*) FILTER (WHERE status = $2)::int,
                   count(*) FILTER (WHERE status = ANY($3))::int,
                   COALESCE(sum(prompt_tokens), 0)::bigint, COALESCE(sum(completion_tokens), 0)::bigint, COALESCE(sum(cached_tokens), 0)::bigint
            FROM jobs WHERE batch_id = $1
            """);
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(JobStatuses.Succeeded);
        command.Parameters.AddWithValue(JobStatuses.Final.Where(s => s != JobStatuses.Succeeded).ToArray());
        await using var reader = await command.ExecuteReaderAsync(ct);
        await reader.ReadAsync(ct);
        return new BatchCounts(reader.GetInt32(0), reader.GetInt32(1), reader.GetInt32(2))
        {
            PromptTokens = reader.GetInt64(3), CompletionTokens = reader.GetInt64(4), CachedTokens = reader.GetInt64(5),
        };
    }

    /// <summary>
    /// The tenant's enqueued batch work in estimated tokens: its unfinished lines, plus the input files of its batches
    /// still being read (their size / 4 until their lines are read).
    /// </summary>
    public async Task<long> EnqueuedTokensAsync(string tenantId, CancellationToken ct)
    {
        await using var command = data.CreateCommand("""
            SELECT (SELECT COALESCE(sum(estimated_tokens), 0) FROM jobs
                    WHERE tenant_id = $1 AND batch_id IS NOT NULL AND status IN ('queued', 'running'))
                 + (SELECT COALESCE(sum(f.bytes / 4), 0) FROM batches b JOIN files f ON f.id = b.input_file_id
                    WHERE b.tenant_id = $1 AND b.status = 'validating')
            """);
        command.Parameters.AddWithValue(tenantId);
        return Convert.ToInt64(await command.ExecuteScalarAsync(ct));
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
    /// Appends ingested lines with one binary COPY and moves the batch's resume point (and its ingestion heartbeat),
    /// in one transaction. Returns false (and writes nothing) when the resume point is no longer
    /// <paramref name="fromBytes"/>: another run of the ingestion got there first, or the batch is no longer
    /// validating.
    /// </summary>
    public async Task<bool> AppendAsync(
        Batch batch, long fromBytes, long toBytes, int ingestedLines, IReadOnlyList<BatchLineRow> rows, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var connection = await data.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        await using (var progress = new NpgsqlCommand(
            "UPDATE batches SET ingested_bytes = $1, ingested_lines = $2, ingestion_heartbeat_at = $5 WHERE id = $3 AND ingested_bytes = $4 AND status = $6",
            connection, transaction))
        {
            progress.Parameters.AddWithValue(toBytes);
            progress.Parameters.AddWithValue(ingestedLines);
            progress.Parameters.AddWithValue(batch.Id);
            progress.Parameters.AddWithValue(fromBytes);
            progress.Parameters.AddWithValue(now);
            progress.Parameters.AddWithValue(BatchStatuses.Validating);
            if (await progress.ExecuteNonQueryAsync(ct) != 1)
            {
                await transaction.RollbackAsync(ct);
                return false;
            }
        }

        if (rows.Count > 0)
        {
            await using var import = await connection.BeginBinaryImportAsync(
                "COPY jobs (id, tenant_id, status, request, created_at, attempts, batch_id, custom_id, line_number, error, finished_at, queue, estimated_tokens) FROM STDIN (FORMAT BINARY)",
                ct);
            foreach (var row in rows)
            {
                await import.StartRowAsync(ct);
                await import.WriteAsync(row.JobId, NpgsqlDbType.Uuid, ct);
                await import.WriteAsync(batch.TenantId, NpgsqlDbType.Varchar, ct);
                await import.WriteAsync(row.Error is null ? JobStatuses.Queued : JobStatuses.Failed, NpgsqlDbType.Varchar, ct);
                await import.WriteAsync(row.Request ?? "{}", NpgsqlDbType.Jsonb, ct);
                await import.WriteAsync(now, NpgsqlDbType.TimestampTz, ct);
                await import.WriteAsync(0, NpgsqlDbType.Integer, ct);
                await import.WriteAsync(batch.Id, NpgsqlDbType.Varchar, ct);
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

                await import.WriteAsync(batch.JobQueue, NpgsqlDbType.Varchar, ct);
                await import.WriteAsync(row.EstimatedTokens, NpgsqlDbType.Integer, ct);
            }

            await import.CompleteAsync(ct);
        }

        await transaction.CommitAsync(ct);
        return true;
    }

    /// <summary>Queued lines end with <paramref name="status"/>; running ones are asked to stop (cancel only).</summary>
    public async Task StopAsync(string batchId, string status, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var queued = data.CreateCommand("UPDATE jobs SET status = $2, finished_at = $3 WHERE batch_id = $1 AND status = $4");
        queued.Parameters.AddWithValue(batchId);
        queued.Parameters.AddWithValue(status);
        queued.Parameters.AddWithValue(now);
        queued.Parameters.AddWithValue(JobStatuses.Queued);
        await queued.ExecuteNonQueryAsync(ct);
        if (status == JobStatuses.Cancelled)
        {
            await using var running = data.CreateCommand(
                "UPDATE jobs SET cancel_requested_at = $2 WHERE batch_id = $1 AND status = $3 AND cancel_requested_at IS NULL");
            running.Parameters.AddWithValue(batchId);
            running.Parameters.AddWithValue(now);
            running.Parameters.AddWithValue(JobStatuses.Running);
            await running.ExecuteNonQueryAsync(ct);
        }
    }

    public async Task<long> UnfinishedAsync(string batchId, CancellationToken ct)
    {
        await using var command = data.CreateCommand("SELECT count(*) FROM jobs WHERE batch_id = $1 AND status <> ALL($2)");
        command.Parameters.AddWithValue(batchId);
        command.Parameters.AddWithValue(JobStatuses.Final);
        return (long)(await command.ExecuteScalarAsync(ct))!;
    }

    /// <summary>Streams the batch's lines in line order.</summary>
    public async IAsyncEnumerable<BatchResultRow> ReadResultsAsync(string batchId, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await using var command = data.CreateCommand("""
            SELECT id, line_number, custom_id, status, output_text, finish_reason, prompt_tokens, completion_tokens, error,
                   request->>'model', finished_at, cached_tokens, logprobs::text, choices::text
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
                reader.IsDBNull(10) ? null : reader.GetFieldValue<DateTimeOffset>(10),
                reader.IsDBNull(11) ? null : reader.GetInt32(11),
                reader.IsDBNull(12) ? null : reader.GetString(12),
                reader.IsDBNull(13) ? null : reader.GetString(13));
        }
    }

    private static Task WriteNullableAsync(NpgsqlBinaryImporter import, string? value, NpgsqlDbType type, CancellationToken ct) =>
        value is null ? import.WriteNullAsync(ct) : import.WriteAsync(value, type, ct);
}
