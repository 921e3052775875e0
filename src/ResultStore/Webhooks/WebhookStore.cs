using System.Security.Cryptography;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace LlmServing.ResultStore.Webhooks;

/// <summary>A delivery due for an attempt, with the tenant's signing secret.</summary>
public sealed record DueWebhook(Guid Id, string TenantId, string EventType, string Url, string Payload, int Attempts, DateTimeOffset CreatedAt, string? Secret);

/// <summary>Tenant webhook settings and the delivery log: claims of due deliveries and the outcome of each attempt.</summary>
public sealed class WebhookStore(NpgsqlDataSource data, IDbContextFactory<LlmServingDbContext> contexts, TimeProvider clock)
{
    public async Task<TenantWebhook?> FindSettingsAsync(string tenantId, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Set<TenantWebhook>().AsNoTracking().SingleOrDefaultAsync(w => w.TenantId == tenantId, ct);
    }

    /// <summary>Sets (or clears, with null) the tenant's default target.</summary>
    public async Task SetDefaultUrlAsync(string tenantId, string? url, CancellationToken ct)
    {
        await using var command = data.CreateCommand("""
            INSERT INTO tenant_webhooks (tenant_id, url, updated_at) VALUES ($1, $2, $3)
            ON CONFLICT (tenant_id) DO UPDATE SET url = EXCLUDED.url, updated_at = EXCLUDED.updated_at
            """);
        command.Parameters.AddWithValue(tenantId);
        command.Parameters.AddWithValue((object?)url ?? DBNull.Value);
        command.Parameters.AddWithValue(clock.GetUtcNow());
        await command.ExecuteNonQueryAsync(ct);
    }

    /// <summary>Issues a new signing secret for the tenant, replacing any earlier one, and returns it (shown once).</summary>
    public async Task<string> IssueSecretAsync(string tenantId, CancellationToken ct)
    {
        var secret = "whsec_" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        await using var command = data.CreateCommand("""
            INSERT INTO tenant_webhooks (tenant_id, secret, updated_at) VALUES ($1, $2, $3)
            ON CONFLICT (tenant_id) DO UPDATE SET secret = EXCLUDED.secret, updated_at = EXCLUDED.updated_at
            """);
        command.Parameters.AddWithValue(tenantId);
        command.Parameters.AddWithValue(secret);
        command.Parameters.AddWithValue(clock.GetUtcNow());
        await command.ExecuteNonQueryAsync(ct);
        return secret;
    }

    /// <summary>
    /// The target of a delivery URL as the sender limits it: scheme, host and port, lower case (the same expression
    /// as <see cref="TargetSql"/>).
    /// </summary>
    public static string Target(string url) =>
        System.Text.RegularExpressions.Regex.Match(url.ToLowerInvariant(), "^[a-z][a-z0-9+.-]*://[^/?#]*").Value;

    private const string TargetSql = "substring(lower(url) from '^[a-z][a-z0-9+.-]*://[^/?#]*')";

    /// <summary>
    /// Claims up to <paramref name="limit"/> due deliveries: each is pushed <paramref name="lease"/> into the future, so
    /// another replica does not send it meanwhile; a sender that dies leaves it due again after the lease.
    /// </summary>
    public Task<IReadOnlyList<DueWebhook>> ClaimDueAsync(int limit, TimeSpan lease, CancellationToken ct) =>
        ClaimDueAsync(limit, lease, new Dictionary<string, int>(), int.MaxValue, ct);

    /// <summary>
    /// Claims up to <paramref name="limit"/> due deliveries for <paramref name="lease"/>, oldest first, so that no
    /// target has more than <paramref name="perTarget"/> in flight counting the <paramref name="inFlight"/> ones.
    /// </summary>
    public async Task<IReadOnlyList<DueWebhook>> ClaimDueAsync(
        int limit, TimeSpan lease, IReadOnlyDictionary<string, int> inFlight, int perTarget, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var command = data.CreateCommand($"""
            UPDATE webhook_deliveries AS d SET next_attempt_at = $2
            FROM (SELECT id FROM (
                      SELECT id, next_attempt_at, {TargetSql} AS target,
                             row_number() OVER (PARTITION BY {TargetSql} ORDER BY next_attempt_at) AS n
                      FROM (SELECT id, url, next_attempt_at FROM webhook_deliveries
                            WHERE status = 'pending' AND next_attempt_at <= $1
                            ORDER BY next_attempt_at LIMIT 1000) AS candidates) AS ranked
                  WHERE n <= $5 - coalesce((SELECT b.c FROM unnest($4::text[], $6::int[]) AS b(t, c) WHERE b.t = ranked.target), 0)
                  ORDER BY next_attempt_at LIMIT $3) AS picked,
                 LATERAL (SELECT id FROM webhook_deliveries w
                          WHERE w.id = picked.id AND w.status = 'pending' AND w.next_attempt_at <= $1
                          FOR UPDATE SKIP LOCKED) AS due
            WHERE d.id = due.id
            RETURNING d.id, d.tenant_id, d.event_type, d.url, d.payload, d.attempts, d.created_at,
                      (SELECT w.secret FROM tenant_webhooks w WHERE w.tenant_id = d.tenant_id)
            """);
        command.Parameters.AddWithValue(now);
        command.Parameters.AddWithValue(now + lease);
        command.Parameters.AddWithValue(limit);
        command.Parameters.AddWithValue(inFlight.Keys.ToArray());
        command.Parameters.AddWithValue(perTarget);
        command.Parameters.AddWithValue(inFlight.Values.ToArray());
        var due = new List<DueWebhook>();
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            due.Add(new DueWebhook(reader.GetGuid(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetString(4),
                reader.GetInt32(5), reader.GetFieldValue<DateTimeOffset>(6), reader.IsDBNull(7) ? null : reader.GetString(7)));
        }

        return due;
    }

    /// <summary>Records one attempt: delivered; or failed, retried at <paramref name="retryAt"/> (null: give up).</summary>
    public async Task RecordAttemptAsync(Guid id, bool delivered, int? statusCode, string? error, DateTimeOffset? retryAt, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var command = data.CreateCommand("""
            UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = $2, last_status_code = $3, last_error = $4,
                   status = $5, delivered_at = CASE WHEN $5 = 'delivered' THEN $2 END, next_attempt_at = COALESCE($6, next_attempt_at)
            WHERE id = $1 AND status = 'pending'
            """);
        command.Parameters.AddWithValue(id);
        command.Parameters.AddWithValue(now);
        command.Parameters.AddWithValue((object?)statusCode ?? DBNull.Value);
        command.Parameters.AddWithValue(error is null ? DBNull.Value : error.Length > 500 ? error[..500] : error);
        command.Parameters.AddWithValue(delivered ? WebhookDeliveryStatuses.Delivered
            : retryAt is null ? WebhookDeliveryStatuses.Failed : WebhookDeliveryStatuses.Pending);
        command.Parameters.AddWithValue(retryAt is { } at ? at : DBNull.Value);
        await command.ExecuteNonQueryAsync(ct);
    }

    /// <summary>The tenant's deliveries, newest first; of one job or batch when <paramref name="subjectId"/> is given.</summary>
    public async Task<List<WebhookDelivery>> ListAsync(string tenantId, string? subjectId, int limit, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        var query = db.Set<WebhookDelivery>().AsNoTracking().Where(d => d.TenantId == tenantId);
        if (subjectId is not null)
        {
            query = query.Where(d => d.SubjectId == subjectId);
        }

        return await query.OrderByDescending(d => d.CreatedAt).ThenBy(d => d.Id).Take(limit).ToListAsync(ct);
    }
}
