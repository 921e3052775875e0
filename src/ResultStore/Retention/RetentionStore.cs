using Npgsql;

namespace LlmServing.ResultStore.Retention;

/// <summary>One row of usage: a tenant's final jobs and tokens on one day (UTC).</summary>
public sealed record UsageRow(string TenantId, DateOnly Day, long Jobs, long PromptTokens, long CompletionTokens, long CachedTokens);

/// <summary>
/// Deletes what outlived its retention, in small transactions that lock only the rows they delete (<c>SKIP LOCKED</c>
/// so replicas share the work), and keeps usage across the deletes: a job's tokens move into <c>usage_daily</c> in the
/// same statement that deletes it.
/// </summary>
public sealed class RetentionStore(NpgsqlDataSource data, TimeProvider clock)
{
    private const string FinalJobs = StatusSql.FinalJobs;
    private const string FinalBatches = StatusSql.FinalBatches;

    /// <summary>
    /// Adds the usage of the jobs a preceding CTE named <c>gone</c> deleted (its rows: tenant_id, day, prompt_tokens,
    /// completion_tokens, cached_tokens) to <c>usage_daily</c>, in the deleting statement itself.
    /// </summary>
    private const string RollUpGone = """
        rolled AS (
            INSERT INTO usage_daily (tenant_id, day, jobs, prompt_tokens, completion_tokens, cached_tokens)
            SELECT tenant_id, day, count(*), COALESCE(sum(prompt_tokens), 0), COALESCE(sum(completion_tokens), 0), COALESCE(sum(cached_tokens), 0)
            FROM gone GROUP BY tenant_id, day
            ON CONFLICT (tenant_id, day) DO UPDATE SET
                jobs = usage_daily.jobs + EXCLUDED.jobs,
                prompt_tokens = usage_daily.prompt_tokens + EXCLUDED.prompt_tokens,
                completion_tokens = usage_daily.completion_tokens + EXCLUDED.completion_tokens,
                cached_tokens = usage_daily.cached_tokens + EXCLUDED.cached_tokens)
        """;

    private const string GoneColumns = "j.tenant_id, (j.finished_at AT TIME ZONE 'UTC')::date AS day, j.prompt_tokens, j.completion_tokens, j.cached_tokens";

    /// <summary>
    /// Deletes up to <paramref name="limit"/> files past <c>expires_at</c>, one transaction each, never one that a
    /// batch still running reads. Returns how many.
    /// </summary>
    public async Task<int> DeleteExpiredFilesAsync(int limit, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        var ids = new List<string>();
        await using (var find = data.CreateCommand($"""
            SELECT f.id FROM files f
            WHERE f.expires_at < $1
              AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.input_file_id = f.id AND b.status NOT IN {FinalBatches})
            ORDER BY f.expires_at LIMIT $2
            """))
        {
            find.Parameters.AddWithValue(now);
            find.Parameters.AddWithValue(limit);
            await using var reader = await find.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                ids.Add(reader.GetString(0));
            }
        }

        var deleted = 0;
        foreach (var id in ids)
        {
            await using var connection = await data.OpenConnectionAsync(ct);
            await using var transaction = await connection.BeginTransactionAsync(ct);
            // Locks the file row, then checks again: a batch that started reading it since is left alone.
            await using (var file = new NpgsqlCommand($"""
                DELETE FROM files f WHERE f.id = $1 AND f.expires_at < $2
                  AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.input_file_id = f.id AND b.status NOT IN {FinalBatches})
                """, connection, transaction))
            {
                file.Parameters.AddWithValue(id);
                file.Parameters.AddWithValue(now);
                if (await file.ExecuteNonQueryAsync(ct) == 0)
                {
                    continue;
                }
            }

            await using (var chunks = new NpgsqlCommand("DELETE FROM file_chunks WHERE file_id = $1", connection, transaction))
            {
                chunks.Parameters.AddWithValue(id);
                await chunks.ExecuteNonQueryAsync(ct);
            }

            await transaction.CommitAsync(ct);
            deleted++;
        }

        return deleted;
    }

    /// <summary>
    /// Deletes up to <paramref name="limit"/> final jobs older than their tenant's retention (else
    /// <paramref name="retention"/>), whose event went out and, for a batch line, whose batch is final (its output
    /// file holds the result). Their usage is added to <c>usage_daily</c> in the same statement. Returns how many.
    /// </summary>
    public async Task<int> DeleteExpiredJobsAsync(TimeSpan retention, int limit, CancellationToken ct)
    {
        await using var command = data.CreateCommand($"""
            WITH doomed AS (
                SELECT j.id FROM jobs j LEFT JOIN tenant_settings t ON t.tenant_id = j.tenant_id
                WHERE j.status IN {FinalJobs}
                  AND j.finished_at < $1 - make_interval(secs => COALESCE(t.job_retention_seconds, $2))
                  AND j.event_sent_at IS NOT NULL
                  AND (j.batch_id IS NULL OR EXISTS (SELECT 1 FROM batches b WHERE b.id = j.batch_id AND b.status IN {FinalBatches}))
                ORDER BY j.finished_at LIMIT $3
                FOR UPDATE OF j SKIP LOCKED),
            gone AS (
                DELETE FROM jobs j USING doomed d WHERE j.id = d.id
                RETURNING {GoneColumns}),
            {RollUpGone}
            SELECT count(*)::int FROM gone
            """);
        command.Parameters.AddWithValue(clock.GetUtcNow());
        command.Parameters.AddWithValue(retention.TotalSeconds);
        command.Parameters.AddWithValue(limit);
        return (int)(await command.ExecuteScalarAsync(ct))!;
    }

    /// <summary>
    /// Deletes one final interactive job of the tenant whose event went out (<c>DELETE /v1/jobs/{id}</c>), its usage
    /// kept as retention keeps it. False when there is no such job in that state.
    /// </summary>
    public async Task<bool> DeleteFinalJobAsync(Guid id, string tenantId, CancellationToken ct)
    {
        await using var command = data.CreateCommand($"""
            WITH gone AS (
                DELETE FROM jobs j WHERE j.id = $1 AND j.tenant_id = $2 AND j.batch_id IS NULL
                  AND j.status IN {FinalJobs} AND j.event_sent_at IS NOT NULL
                RETURNING {GoneColumns}),
            {RollUpGone}
            SELECT count(*)::int FROM gone
            """);
        command.Parameters.AddWithValue(id);
        command.Parameters.AddWithValue(tenantId);
        return (int)(await command.ExecuteScalarAsync(ct))! == 1;
    }

    /// <summary>Deletes up to <paramref name="limit"/> final batches past retention whose lines are all gone. Returns how many.</summary>
    public async Task<int> DeleteExpiredBatchesAsync(TimeSpan retention, int limit, CancellationToken ct)
    {
        await using var command = data.CreateCommand($"""
            DELETE FROM batches WHERE id IN (
                SELECT b.id FROM batches b LEFT JOIN tenant_settings t ON t.tenant_id = b.tenant_id
                WHERE b.status IN {FinalBatches} AND b.event_sent_at IS NOT NULL
                  AND COALESCE(b.completed_at, b.failed_at, b.cancelled_at, b.expired_at, b.created_at)
                      < $1 - make_interval(secs => COALESCE(t.job_retention_seconds, $2))
                  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id)
                LIMIT $3 FOR UPDATE OF b SKIP LOCKED)
            """);
        command.Parameters.AddWithValue(clock.GetUtcNow());
        command.Parameters.AddWithValue(retention.TotalSeconds);
        command.Parameters.AddWithValue(limit);
        return await command.ExecuteNonQueryAsync(ct);
    }

    /// <summary>Deletes up to <paramref name="limit"/> finished webhook deliveries (delivered or given up) older than <paramref name="retention"/>.</summary>
    public async Task<int> DeleteOldDeliveriesAsync(TimeSpan retention, int limit, CancellationToken ct)
    {
        await using var command = data.CreateCommand("""
            DELETE FROM webhook_deliveries WHERE id IN (
                SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
            """);
        command.Parameters.AddWithValue(clock.GetUtcNow() - retention);
        command.Parameters.AddWithValue(limit);
        return await command.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// Usage per tenant and day (UTC) from <paramref name="from"/> to <paramref name="to"/> inclusive: final jobs still
    /// stored plus those retention rolled into <c>usage_daily</c>; one tenant's, or every tenant's when null.
    /// </summary>
    public async Task<List<UsageRow>> UsageAsync(string? tenantId, DateOnly from, DateOnly to, CancellationToken ct)
    {
        await using var command = data.CreateCommand($"""
            SELECT tenant_id, day, sum(jobs)::bigint, sum(prompt)::bigint, sum(completion)::bigint, sum(cached)::bigint FROM (
                SELECT tenant_id, day, jobs, prompt_tokens AS prompt, completion_tokens AS completion, cached_tokens AS cached
                FROM usage_daily WHERE day BETWEEN $1 AND $2 AND ($3::text IS NULL OR tenant_id = $3)
                UNION ALL
                SELECT tenant_id, (finished_at AT TIME ZONE 'UTC')::date, count(*), COALESCE(sum(prompt_tokens), 0),
                       COALESCE(sum(completion_tokens), 0), COALESCE(sum(cached_tokens), 0)
                FROM jobs WHERE status IN {FinalJobs} AND finished_at >= $4 AND finished_at < $5 AND ($3::text IS NULL OR tenant_id = $3)
                GROUP BY tenant_id, (finished_at AT TIME ZONE 'UTC')::date
            ) u GROUP BY tenant_id, day ORDER BY day, tenant_id
            """);
        command.Parameters.AddWithValue(from);
        command.Parameters.AddWithValue(to);
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)tenantId ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        command.Parameters.AddWithValue(new DateTimeOffset(from.ToDateTime(TimeOnly.MinValue), TimeSpan.Zero));
        command.Parameters.AddWithValue(new DateTimeOffset(to.AddDays(1).ToDateTime(TimeOnly.MinValue), TimeSpan.Zero));
        var rows = new List<UsageRow>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            rows.Add(new UsageRow(reader.GetString(0), reader.GetFieldValue<DateOnly>(1), reader.GetInt64(2), reader.GetInt64(3),
                reader.GetInt64(4), reader.GetInt64(5)));
        }

        return rows;
    }
}
