using LlmServing.Contracts;
using LlmServing.ResultStore;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Jobs;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace LlmServing.Producer.OperatorConsole;

/// <summary>Finished jobs of one status in one time bucket.</summary>
public sealed record StatusBucket(int Bucket, string Status, long Jobs);

/// <summary>What the overview shows from PostgreSQL.</summary>
public sealed record OverviewData(
    DateTimeOffset From,
    IReadOnlyList<StatusBucket> Finished,
    IReadOnlyList<double> TokensPerSecond,
    IReadOnlyDictionary<string, long> NowByStatus,
    Job? OldestQueued);

/// <summary>A job search from the console; every field optional.</summary>
public sealed record JobQuery(Guid? Id, string? Status, string? Tenant, DateTimeOffset? From, DateTimeOffset? To, string? BatchId);

/// <summary>
/// The console's reads: what the API does not list (all tenants for the admin; the last hour in buckets). Each takes
/// the user's scope: null for every tenant (the admin), else one tenant.
/// </summary>
public sealed class ConsoleQueries(NpgsqlDataSource data, IDbContextFactory<LlmServingDbContext> contexts, TimeProvider clock)
{
    public const int BucketMinutes = 5;
    public const int Buckets = 12;

    public async Task<OverviewData> OverviewAsync(string? scope, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        var from = now.AddMinutes(-BucketMinutes * Buckets);
        // One pass over the hour's finished jobs, per minute and status: jobs per 5-minute bucket, and tokens per second
        // (completion tokens counted at the minute their job finished).
        var counts = new Dictionary<(int Bucket, string Status), long>();
        var tokens = new double[BucketMinutes * Buckets];
        await using (var command = data.CreateCommand("""
            SELECT floor(extract(epoch FROM (finished_at - $1)) / 60)::int, status, count(*), COALESCE(sum(completion_tokens), 0)::bigint
            FROM jobs WHERE finished_at >= $1 AND ($2::text IS NULL OR tenant_id = $2)
            GROUP BY 1, 2
            """))
        {
            command.Parameters.AddWithValue(from);
            command.Parameters.Add(Scope(scope));
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                var minute = Math.Clamp(reader.GetInt32(0), 0, tokens.Length - 1);
                var key = (minute / BucketMinutes, reader.GetString(1));
                counts[key] = counts.GetValueOrDefault(key) + reader.GetInt64(2);
                tokens[minute] += reader.GetInt64(3) / 60.0;
            }
        }

        var finished = counts.Select(c => new StatusBucket(c.Key.Bucket, c.Key.Status, c.Value)).ToList();
        var byStatus = new Dictionary<string, long>();
        await using (var command = data.CreateCommand("""
            SELECT status, count(*) FROM jobs WHERE status IN ('queued', 'running') AND ($1::text IS NULL OR tenant_id = $1) GROUP BY 1
            """))
        {
            command.Parameters.Add(Scope(scope));
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                byStatus[reader.GetString(0)] = reader.GetInt64(1);
            }
        }

        await using var db = await contexts.CreateDbContextAsync(ct);
        var oldest = await db.Jobs.AsNoTracking()
            .Where(j => j.Status == JobStatuses.Queued && (scope == null || j.TenantId == scope))
            .OrderBy(j => j.CreatedAt).FirstOrDefaultAsync(ct);
        return new OverviewData(from, finished, tokens, byStatus, oldest);
    }

    /// <summary>The tenant filter as a text parameter: null (every tenant) is a typed NULL.</summary>
    private static NpgsqlParameter Scope(string? scope) =>
        new() { Value = (object?)scope ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text };

    public async Task<List<Job>> JobsAsync(string? scope, JobQuery query, int limit, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        var jobs = db.Jobs.AsNoTracking().Where(j => scope == null || j.TenantId == scope);
        if (query.Id is { } id)
        {
            jobs = jobs.Where(j => j.Id == id);
        }

        if (!string.IsNullOrEmpty(query.Status))
        {
            jobs = jobs.Where(j => j.Status == query.Status);
        }

        if (!string.IsNullOrEmpty(query.Tenant))
        {
            jobs = jobs.Where(j => j.TenantId == query.Tenant);
        }

        if (!string.IsNullOrEmpty(query.BatchId))
        {
            jobs = jobs.Where(j => j.BatchId == query.BatchId);
        }

        if (query.From is { } from)
        {
            jobs = jobs.Where(j => j.CreatedAt >= from);
        }

        if (query.To is { } to)
        {
            jobs = jobs.Where(j => j.CreatedAt < to);
        }

        return await jobs.OrderByDescending(j => j.CreatedAt).Take(limit).ToListAsync(ct);
    }

    public async Task<Job?> JobAsync(string? scope, Guid id, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Jobs.AsNoTracking().SingleOrDefaultAsync(j => j.Id == id && (scope == null || j.TenantId == scope), ct);
    }

    public async Task<List<Batch>> BatchesAsync(string? scope, int limit, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Set<Batch>().AsNoTracking().Where(b => scope == null || b.TenantId == scope)
            .OrderByDescending(b => b.CreatedAt).Take(limit).ToListAsync(ct);
    }

    public async Task<Batch?> BatchAsync(string? scope, string id, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Set<Batch>().AsNoTracking().SingleOrDefaultAsync(b => b.Id == id && (scope == null || b.TenantId == scope), ct);
    }

    /// <summary>Every tenant the deployment knows: from keys, settings, stored jobs and usage roll-ups.</summary>
    public async Task<List<string>> TenantsAsync(CancellationToken ct)
    {
        var tenants = new List<string>();
        await using var command = data.CreateCommand("""
            SELECT tenant_id FROM api_keys UNION SELECT tenant_id FROM tenant_settings
            UNION SELECT tenant_id FROM usage_daily UNION SELECT DISTINCT tenant_id FROM jobs ORDER BY 1
            """);
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            tenants.Add(reader.GetString(0));
        }

        return tenants;
    }
}
