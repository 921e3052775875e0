using Npgsql;

namespace LlmServing.ResultStore.Webhooks;

/// <summary>A final job whose event is owed, with the webhook target it resolves to (its own, else the tenant's).</summary>
public sealed record OwedJobEvent(
    Guid Id, string TenantId, string Status, string? FinishReason, string? OutputText, string? Error,
    int? PromptTokens, int? CompletionTokens, int? CachedTokens, string? IdempotencyKey, string? BatchId, string? CustomId,
    DateTimeOffset? FinishedAt, string? WebhookUrl)
{
    public DateTimeOffset CreatedAt { get; init; }

    public DateTimeOffset? StartedAt { get; init; }

    /// <summary>Operator replays so far: part of the event's message id.</summary>
    public int Replays { get; init; }
}

/// <summary>A final batch whose event is owed (its counts come from <see cref="Batches.BatchLineStore.CountsAsync"/>).</summary>
public sealed record OwedBatchEvent(
    string Id, string TenantId, string Status, string? OutputFileId, string? ErrorFileId, DateTimeOffset? FinishedAt, string? WebhookUrl);

/// <summary>A webhook to record together with the events that caused it.</summary>
public sealed record NewWebhookDelivery(Guid Id, string TenantId, string EventType, string SubjectId, string Url, string Payload);

/// <summary>
/// Owed result events (ADR 0006). A claim locks up to N final rows whose event was not sent (<c>FOR UPDATE SKIP
/// LOCKED</c>, so replicas share the work); the caller publishes them, then <see cref="EventClaim{T}.CompleteAsync"/>
/// marks them sent and records their webhook deliveries in the same transaction. A crash before that leaves them
/// owed: they are published again (at least once; consumers deduplicate on the stable message id).
/// </summary>
public sealed class ResultEventStore(NpgsqlDataSource data, TimeProvider clock)
{
    private const string FinalJobs = StatusSql.FinalJobs;
    private const string FinalBatches = StatusSql.FinalBatches;

    public async Task<EventClaim<OwedJobEvent>> ClaimJobsAsync(int limit, CancellationToken ct)
    {
        var connection = await data.OpenConnectionAsync(ct);
        var transaction = await connection.BeginTransactionAsync(ct);
        var items = new List<OwedJobEvent>();
        await using (var command = new NpgsqlCommand($"""
            SELECT j.id, j.tenant_id, j.status, j.finish_reason, j.output_text, j.error, j.prompt_tokens, j.completion_tokens,
                   j.cached_tokens, j.idempotency_key, j.batch_id, j.custom_id, j.finished_at,
                   COALESCE(j.webhook_url, CASE WHEN j.batch_id IS NULL THEN w.url END), j.created_at, j.started_at, j.replays
            FROM jobs j LEFT JOIN tenant_webhooks w ON w.tenant_id = j.tenant_id
            WHERE j.event_sent_at IS NULL AND j.status IN {FinalJobs}
            ORDER BY j.id LIMIT $1
            FOR UPDATE OF j SKIP LOCKED
            """, connection, transaction))
        {
            command.Parameters.AddWithValue(limit);
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                items.Add(new OwedJobEvent(
                    reader.GetGuid(0), reader.GetString(1), reader.GetString(2), Str(reader, 3), Str(reader, 4), Str(reader, 5),
                    Int(reader, 6), Int(reader, 7), Int(reader, 8), Str(reader, 9), Str(reader, 10), Str(reader, 11),
                    reader.IsDBNull(12) ? null : reader.GetFieldValue<DateTimeOffset>(12), Str(reader, 13))
                {
                    CreatedAt = reader.GetFieldValue<DateTimeOffset>(14),
                    StartedAt = reader.IsDBNull(15) ? null : reader.GetFieldValue<DateTimeOffset>(15),
                    Replays = reader.GetInt32(16),
                });
            }
        }

        return new EventClaim<OwedJobEvent>(connection, transaction, items, clock,
            "UPDATE jobs SET event_sent_at = $2 WHERE id = ANY($1)", items.Select(i => i.Id).ToArray());
    }

    public async Task<EventClaim<OwedBatchEvent>> ClaimBatchesAsync(int limit, CancellationToken ct)
    {
        var connection = await data.OpenConnectionAsync(ct);
        var transaction = await connection.BeginTransactionAsync(ct);
        var items = new List<OwedBatchEvent>();
        await using (var command = new NpgsqlCommand($"""
            SELECT b.id, b.tenant_id, b.status, b.output_file_id, b.error_file_id,
                   COALESCE(b.completed_at, b.failed_at, b.cancelled_at, b.expired_at), COALESCE(b.webhook_url, w.url)
            FROM (SELECT * FROM batches WHERE event_sent_at IS NULL AND status IN {FinalBatches}
                  ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED) b
            LEFT JOIN tenant_webhooks w ON w.tenant_id = b.tenant_id
            """, connection, transaction))
        {
            command.Parameters.AddWithValue(limit);
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                items.Add(new OwedBatchEvent(
                    reader.GetString(0), reader.GetString(1), reader.GetString(2), Str(reader, 3), Str(reader, 4),
                    reader.IsDBNull(5) ? null : reader.GetFieldValue<DateTimeOffset>(5), Str(reader, 6)));
            }
        }

        return new EventClaim<OwedBatchEvent>(connection, transaction, items, clock,
            "UPDATE batches SET event_sent_at = $2 WHERE id = ANY($1)", items.Select(i => i.Id).ToArray());
    }

    private static string? Str(NpgsqlDataReader r, int i) => r.IsDBNull(i) ? null : r.GetString(i);

    private static int? Int(NpgsqlDataReader r, int i) => r.IsDBNull(i) ? null : r.GetInt32(i);
}

/// <summary>Locked owed events; dispose without completing to leave them owed.</summary>
public sealed class EventClaim<T>(
    NpgsqlConnection connection, NpgsqlTransaction transaction, IReadOnlyList<T> items, TimeProvider clock, string markSql, Array ids)
    : IAsyncDisposable
{
    public IReadOnlyList<T> Items => items;

    /// <summary>Marks the claimed events sent and records <paramref name="deliveries"/>, in one commit.</summary>
    public async Task CompleteAsync(IReadOnlyCollection<NewWebhookDelivery> deliveries, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        var batch = new NpgsqlBatch(connection, transaction);
        var mark = new NpgsqlBatchCommand(markSql);
        mark.Parameters.Add(new NpgsqlParameter { Value = ids });
        mark.Parameters.Add(new NpgsqlParameter { Value = now });
        batch.BatchCommands.Add(mark);
        if (deliveries.Count > 0)
        {
            var insert = new NpgsqlBatchCommand("""
                INSERT INTO webhook_deliveries (id, tenant_id, event_type, subject_id, url, payload, status, attempts, next_attempt_at, created_at)
                SELECT d.id, d.tenant_id, d.event_type, d.subject_id, d.url, d.payload, 'pending', 0, $7, $7
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                     AS d(id, tenant_id, event_type, subject_id, url, payload)
                ON CONFLICT (id) DO NOTHING
                """);
            insert.Parameters.Add(new NpgsqlParameter { Value = deliveries.Select(d => d.Id).ToArray() });
            insert.Parameters.Add(new NpgsqlParameter { Value = deliveries.Select(d => d.TenantId).ToArray() });
            insert.Parameters.Add(new NpgsqlParameter { Value = deliveries.Select(d => d.EventType).ToArray() });
            insert.Parameters.Add(new NpgsqlParameter { Value = deliveries.Select(d => d.SubjectId).ToArray() });
            insert.Parameters.Add(new NpgsqlParameter { Value = deliveries.Select(d => d.Url).ToArray() });
            insert.Parameters.Add(new NpgsqlParameter { Value = deliveries.Select(d => d.Payload).ToArray() });
            insert.Parameters.Add(new NpgsqlParameter { Value = now });
            batch.BatchCommands.Add(insert);
        }

        await using (batch)
        {
            await batch.ExecuteNonQueryAsync(ct);
        }

        await transaction.CommitAsync(ct);
    }

    public async ValueTask DisposeAsync()
    {
        await transaction.DisposeAsync();
        await connection.DisposeAsync();
    }
}
