using LlmServing.Contracts;
using Microsoft.EntityFrameworkCore;
using Npgsql;
using NpgsqlTypes;

namespace LlmServing.ResultStore.Jobs;

/// <summary>The result of a finished generation, as written by a worker.</summary>
public sealed record JobResult(string OutputText, string FinishReason, int PromptTokens, int CompletionTokens)
{
    /// <summary>Prompt tokens taken from the worker's prefix cache.</summary>
    public int CachedTokens { get; init; }

    /// <summary>OpenAI's <c>logprobs</c> object as JSON, when the request asked for it.</summary>
    public string? LogprobsJson { get; init; }

    /// <summary>Every choice as JSON, when the request asked for more than one.</summary>
    public string? ChoicesJson { get; init; }

    /// <summary>
    /// The text as PostgreSQL can store it: a model may emit a NUL byte (a <c>&lt;0x00&gt;</c> token), which a text
    /// column rejects; it becomes U+FFFD, as other undecodable bytes already are.
    /// </summary>
    public string StorableText => Storable(OutputText);

    /// <summary>Generated text as a PostgreSQL text column takes it: a NUL becomes U+FFFD.</summary>
    public static string Storable(string text) => text.Contains('\0', StringComparison.Ordinal) ? text.Replace('\0', '\uFFFD') : text;
}

/// <summary>
/// Job state changes. Each is one conditional UPDATE, so they are atomic and idempotent: a job never moves
/// out of a final state, and a second "completed" for the same job changes nothing.
/// </summary>
public sealed class JobStore(IDbContextFactory<LlmServingDbContext> contexts, NpgsqlDataSource data, TimeProvider clock)
{
    private static readonly string[] FinalStatuses = JobStatuses.Final;

    /// <summary>The lease of a claim when the worker does not say.</summary>
    public static readonly TimeSpan DefaultLease = TimeSpan.FromMinutes(2);

    /// <summary>
    /// Inserts a new job. When the tenant already has a job with the same idempotency key, returns that job
    /// instead and <c>Created</c> is false.
    /// </summary>
    public async Task<(Job Job, bool Created)> CreateAsync(Job job, CancellationToken ct)
    {
        job.CreatedAt = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        db.Jobs.Add(job);
        try
        {
            await db.SaveChangesAsync(ct);
            return (job, true);
        }
        catch (DbUpdateException e) when (e.InnerException is PostgresException { SqlState: PostgresErrorCodes.UniqueViolation }
                                          && job.IdempotencyKey is not null)
        {
            await using var again = await contexts.CreateDbContextAsync(ct);
            var existing = await again.Jobs.AsNoTracking()
                .SingleAsync(j => j.TenantId == job.TenantId && j.IdempotencyKey == job.IdempotencyKey, ct);
            return (existing, false);
        }
    }

    /// <summary>
    /// Inserts many new jobs without an idempotency key (nothing to conflict on) in one transaction and round trip: a
    /// Producer's group commit of concurrent submissions. Returns true per job.
    /// </summary>
    public async Task<IReadOnlyList<bool>> CreateManyAsync(IReadOnlyList<Job> jobs, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        foreach (var job in jobs)
        {
            if (job.IdempotencyKey is not null || job.BatchId is not null)
            {
                throw new ArgumentException("Only interactive jobs without an idempotency key are inserted together.", nameof(jobs));
            }

            job.CreatedAt = now;
        }

        // One multi-row INSERT of the columns a new interactive job has (every other column starts null or 0); the
        // columns are checked against the entity by a test (ResultStoreTests).
        await using var command = data.CreateCommand("""
            INSERT INTO jobs (id, tenant_id, status, request_hash, request, created_at, deadline, queue, webhook_url, estimated_tokens, attempts, replays)
            SELECT id, tenant_id, status, request_hash, request::jsonb, $6, deadline, queue, webhook_url, estimated_tokens, 0, 0
            FROM unnest($1, $2, $3, $4, $5, $7, $8, $9, $10) AS r(id, tenant_id, status, request_hash, request, deadline, queue, webhook_url, estimated_tokens)
            """);
        AddArray(command, jobs.Select(j => j.Id).ToArray(), NpgsqlDbType.Uuid);
        AddArray(command, jobs.Select(j => j.TenantId).ToArray(), NpgsqlDbType.Text);
        AddArray(command, jobs.Select(j => j.Status).ToArray(), NpgsqlDbType.Text);
        AddArray(command, jobs.Select(j => j.RequestHash).ToArray(), NpgsqlDbType.Text);
        AddArray(command, jobs.Select(j => j.Request).ToArray(), NpgsqlDbType.Text);
        command.Parameters.Add(new NpgsqlParameter { Value = now, NpgsqlDbType = NpgsqlDbType.TimestampTz });
        AddArray(command, jobs.Select(j => j.Deadline).ToArray(), NpgsqlDbType.TimestampTz);
        AddArray(command, jobs.Select(j => j.Queue).ToArray(), NpgsqlDbType.Text);
        AddArray(command, jobs.Select(j => j.WebhookUrl).ToArray(), NpgsqlDbType.Text);
        AddArray(command, jobs.Select(j => j.EstimatedTokens).ToArray(), NpgsqlDbType.Integer);
        await command.ExecuteNonQueryAsync(ct);
        return jobs.Select(_ => true).ToList();
    }

    /// <summary>
    /// Inserts a new interactive job unless the tenant already has <paramref name="maxQueued"/> interactive jobs
    /// waiting (then <c>Job</c> is null). One transaction under a per-tenant advisory lock, so concurrent submits
    /// cannot overrun the cap; a replay of an idempotency key is answered first and never counts against it.
    /// </summary>
    public async Task<(Job? Job, bool Created)> CreateCappedAsync(Job job, int maxQueued, CancellationToken ct)
    {
        job.CreatedAt = clock.GetUtcNow();
        await using var outer = await contexts.CreateDbContextAsync(ct);
        // The retrying execution strategy runs the whole transaction again on a transient failure, with a fresh context.
        return await outer.Database.CreateExecutionStrategy().ExecuteAsync(async () =>
        {
            await using var db = await contexts.CreateDbContextAsync(ct);
            await using var transaction = await db.Database.BeginTransactionAsync(ct);
            await db.Database.ExecuteSqlAsync($"SELECT pg_advisory_xact_lock(hashtextextended({"llmserving.queued:" + job.TenantId}, 0))", ct);
            if (job.IdempotencyKey is not null
                && await db.Jobs.AsNoTracking().SingleOrDefaultAsync(j => j.TenantId == job.TenantId && j.IdempotencyKey == job.IdempotencyKey, ct) is { } existing)
            {
                return (existing, false);
            }

            if (await db.Jobs.AsNoTracking().SingleOrDefaultAsync(j => j.Id == job.Id, ct) is { } mine)
            {
                return (mine, true); // an earlier attempt committed, but its acknowledgement was lost
            }

            if (await db.Jobs.CountAsync(j => j.TenantId == job.TenantId && j.Status == JobStatuses.Queued && j.BatchId == null, ct) >= maxQueued)
            {
                return ((Job?)null, false);
            }

            db.Jobs.Add(job);
            await db.SaveChangesAsync(ct);
            await transaction.CommitAsync(ct);
            return ((Job?)job, true);
        });
    }

    public async Task<Job?> FindAsync(Guid id, string tenantId, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Jobs.AsNoTracking().SingleOrDefaultAsync(j => j.Id == id && j.TenantId == tenantId, ct);
    }

    /// <summary>Records the broker's confirms of many jobs' messages in one statement (a Producer's group commit).</summary>
    public async Task<IReadOnlyList<bool>> MarkPublishedManyAsync(IReadOnlyList<Guid> ids, CancellationToken ct)
    {
        await RetryTransientAsync(async () =>
        {
            await using var command = data.CreateCommand($"""
                UPDATE jobs AS j SET queued_at = $2
                FROM ({LockInIdOrder("queued_at IS NULL")}) AS l
                WHERE j.id = l.id
                """);
            AddArray(command, ids.ToArray(), NpgsqlDbType.Uuid);
            command.Parameters.Add(new NpgsqlParameter { Value = clock.GetUtcNow(), NpgsqlDbType = NpgsqlDbType.TimestampTz });
            return await command.ExecuteNonQueryAsync(ct);
        });
        return ids.Select(_ => true).ToList();
    }

    /// <summary>A queued job's message was sent again (to the end of its queue): its confirm time moves to now.</summary>
    public async Task TouchQueuedAsync(Guid id, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        await db.Jobs.Where(j => j.Id == id && j.Status == JobStatuses.Queued)
            .ExecuteUpdateAsync(s => s.SetProperty(j => j.QueuedAt, now), ct);
    }

    /// <summary>
    /// Accepted interactive jobs of <paramref name="jobQueue"/> (rows without a recorded queue count as its) whose
    /// message the broker has not confirmed, oldest first. Batch lines are the batch releaser's (ADR 0007).
    /// </summary>
    public async Task<IReadOnlyList<Job>> FindUnpublishedAsync(string jobQueue, TimeSpan minAge, int limit, CancellationToken ct)
    {
        var before = clock.GetUtcNow() - minAge;
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Jobs.AsNoTracking()
            .Where(j => j.QueuedAt == null && j.Status == JobStatuses.Queued && j.CreatedAt <= before)
            .Where(j => j.BatchId == null && (j.Queue == jobQueue || j.Queue == null))
            .OrderBy(j => j.CreatedAt)
            .Take(limit)
            .ToListAsync(ct);
    }

    /// <summary>Extends the leases of the running jobs a worker holds. Returns how many it still holds.</summary>
    public async Task<int> RenewLeasesAsync(IReadOnlyCollection<Guid> ids, TimeSpan lease, CancellationToken ct)
    {
        if (ids.Count == 0)
        {
            return 0;
        }

        return await RetryTransientAsync(async () =>
        {
            var until = clock.GetUtcNow() + lease; // from each try, not the first: a retry must not renew less
            await using var command = data.CreateCommand($"""
                UPDATE jobs AS j SET lease_expires_at = $2
                FROM ({LockInIdOrder("status = 'running'")}) AS l
                WHERE j.id = l.id
                """);
            AddArray(command, ids.ToArray(), NpgsqlDbType.Uuid);
            command.Parameters.Add(new NpgsqlParameter { Value = until, NpgsqlDbType = NpgsqlDbType.TimestampTz });
            return await command.ExecuteNonQueryAsync(ct);
        });
    }

    /// <summary>
    /// Requeues running jobs of the given queues whose lease lapsed: no worker vouches for them any more (it died, or
    /// its message was dead-lettered while PostgreSQL was down). They become <c>queued</c> with no <c>queued_at</c>, so
    /// the publish sweep sends them again; <c>attempts</c> keeps counting. Returns their ids.
    /// </summary>
    public async Task<IReadOnlyList<Guid>> RequeueOrphanedAsync(string[] queues, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Database.SqlQuery<Guid>($"""
            UPDATE jobs AS j SET status = {JobStatuses.Queued}, queued_at = NULL, lease_expires_at = NULL
            WHERE j.status = {JobStatuses.Running} AND j.lease_expires_at < {now} AND (j.queue = ANY({queues}) OR j.queue IS NULL)
            RETURNING j.id AS "Value"
            """).ToListAsync(ct);
    }

    /// <summary>
    /// Marks queued jobs of <paramref name="queue"/> that the broker confirmed more than <paramref name="age"/> ago as
    /// unsent again, so the sweep republishes them. Call it only when that queue holds no ready message: then their
    /// message was lost (dead-lettered while PostgreSQL was down, or purged). Returns how many.
    /// </summary>
    public async Task<int> RequeueLostAsync(string queue, bool interactive, TimeSpan age, CancellationToken ct)
    {
        var before = clock.GetUtcNow() - age;
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Jobs
            .Where(j => j.Status == JobStatuses.Queued && j.QueuedAt != null && j.QueuedAt < before
                        && (j.Queue == queue || (j.Queue == null && interactive && j.BatchId == null)))
            .ExecuteUpdateAsync(s => s.SetProperty(j => j.QueuedAt, (DateTimeOffset?)null), ct);
    }


    /// <summary>
    /// Claims a job for a worker in one statement: <c>queued</c> (or <c>running</c>, after a crash and redelivery)
    /// becomes <c>running</c> and <c>attempts</c> grows by one; unless a cancel was requested (the job becomes
    /// <c>cancelled</c>) or its deadline passed while queued (<c>expired</c>). Returns the job as it is now, or null
    /// when it is unknown or was already final: then the message is a duplicate, to acknowledge without running.
    /// Run it only when the returned status is <c>running</c>.
    /// </summary>
    /// <param name="id">The job.</param>
    /// <param name="workerId">Recorded on the job.</param>
    /// <param name="ct">Cancellation.</param>
    /// <param name="reclaimRunning">
    /// Whether a job already <c>running</c> may be claimed again: true for a redelivery (its worker died) or a retry,
    /// false for a fresh duplicate of the message while the first copy may still be running elsewhere.
    /// </param>
    /// <param name="lease">How long the claim holds without renewal (<see cref="RenewLeasesAsync"/>).</param>
    public async Task<Job?> TryStartAsync(Guid id, string workerId, CancellationToken ct, bool reclaimRunning = true, TimeSpan? lease = null) =>
        (await TryStartManyAsync([new StartRequest(id, workerId, reclaimRunning, lease ?? DefaultLease)], ct))[0];

    /// <summary>
    /// <see cref="TryStartAsync"/> for many jobs in one statement (a worker's group commit). Returns, per request in
    /// order, the job afterwards or null. A job asked for twice is claimed for its first request only (the other is a
    /// duplicate message). Rows are locked in id order, so concurrent groups cannot deadlock.
    /// </summary>
    public async Task<IReadOnlyList<Job?>> TryStartManyAsync(IReadOnlyList<StartRequest> requests, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        var first = new Dictionary<Guid, int>();
        for (var i = 0; i < requests.Count; i++)
        {
            first.TryAdd(requests[i].Id, i);
        }

        var unique = first.Values.Select(i => requests[i]).ToList();
        var ids = unique.Select(r => r.Id).ToArray();
        var reclaims = unique.Select(r => r.ReclaimRunning).ToArray();
        var workers = unique.Select(r => r.WorkerId).ToArray();
        var leases = unique.Select(r => now + r.Lease).ToArray();
        // Plain Npgsql, not EF: this is a worker's first statement, and compiling it through EF cost a cold start about
        // half a second on a small machine.
        var rows = await RetryTransientAsync(async () =>
        {
            await using var command = data.CreateCommand($"""
                UPDATE jobs AS j SET
                  status = n.next,
                  started_at = CASE WHEN n.next = 'running' THEN $1 ELSE j.started_at END,
                  queued_at = COALESCE(j.queued_at, $1),
                  attempts = j.attempts + CASE WHEN n.next = 'running' THEN 1 ELSE 0 END,
                  worker_id = CASE WHEN n.next = 'running' THEN n.worker ELSE j.worker_id END,
                  lease_expires_at = CASE WHEN n.next = 'running' THEN n.lease_until ELSE NULL END,
                  finished_at = CASE WHEN n.next = 'running' THEN j.finished_at ELSE $1 END
                FROM (SELECT jobs.id, r.worker, r.lease_until,
                         CASE WHEN jobs.cancel_requested_at IS NOT NULL THEN 'cancelled'
                              WHEN jobs.status = 'queued' AND jobs.deadline < $1 THEN 'expired'
                              ELSE 'running' END AS next
                      FROM jobs JOIN unnest($2, $3, $4, $5) AS r(id, reclaim, worker, lease_until) ON jobs.id = r.id
                      WHERE jobs.status = 'queued' OR (jobs.status = 'running' AND r.reclaim)
                      ORDER BY jobs.id
                      FOR UPDATE OF jobs) AS n
                WHERE j.id = n.id
                RETURNING {JobColumns}
                """);
            command.Parameters.Add(new NpgsqlParameter { Value = now, NpgsqlDbType = NpgsqlDbType.TimestampTz });
            AddArray(command, ids, NpgsqlDbType.Uuid);
            AddArray(command, reclaims, NpgsqlDbType.Boolean);
            AddArray(command, workers, NpgsqlDbType.Text);
            AddArray(command, leases, NpgsqlDbType.TimestampTz);
            var claimed = new List<Job>();
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                claimed.Add(ReadJob(reader));
            }

            return claimed;
        });
        var byId = rows.ToDictionary(r => r.Id);
        return requests.Select((r, i) => first[r.Id] == i ? byId.GetValueOrDefault(r.Id) : null).ToList();
    }

    /// <summary>
    /// Final results (succeeded, or cancelled with the text so far) of many jobs in one statement (a worker's group
    /// commit). Returns, per write in order, whether it was written (false: the job was already final).
    /// </summary>
    public async Task<IReadOnlyList<bool>> WriteResultsAsync(IReadOnlyList<ResultWrite> writes, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        var written = await RetryTransientAsync(async () =>
        {
            await using var command = data.CreateCommand($"""
                UPDATE jobs AS j SET status = r.status, output_text = r.text, finish_reason = r.finish, prompt_tokens = r.prompt,
                  completion_tokens = r.completion, cached_tokens = r.cached, logprobs = r.logprobs::jsonb, choices = r.choices::jsonb,
                  finished_at = $10, partial_text = NULL, error = NULL
                FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9) AS r(id, status, text, finish, prompt, completion, cached, logprobs, choices),
                     ({LockInIdOrder("status NOT IN " + StatusSql.FinalJobs)}) AS l
                WHERE j.id = r.id AND j.id = l.id
                RETURNING j.id
                """);
            AddArray(command, writes.Select(w => w.Id).ToArray(), NpgsqlDbType.Uuid);
            AddArray(command, writes.Select(w => w.Status).ToArray(), NpgsqlDbType.Text);
            AddArray(command, writes.Select(w => w.Result.StorableText).ToArray(), NpgsqlDbType.Text);
            AddArray(command, writes.Select(w => w.Result.FinishReason).ToArray(), NpgsqlDbType.Text);
            AddArray(command, writes.Select(w => (int?)w.Result.PromptTokens).ToArray(), NpgsqlDbType.Integer);
            AddArray(command, writes.Select(w => (int?)w.Result.CompletionTokens).ToArray(), NpgsqlDbType.Integer);
            AddArray(command, writes.Select(w => w.Result.CachedTokens).ToArray(), NpgsqlDbType.Integer);
            AddArray(command, writes.Select(w => w.Result.LogprobsJson).ToArray(), NpgsqlDbType.Text);
            AddArray(command, writes.Select(w => w.Result.ChoicesJson).ToArray(), NpgsqlDbType.Text);
            command.Parameters.Add(new NpgsqlParameter { Value = now, NpgsqlDbType = NpgsqlDbType.TimestampTz });
            var ids = new HashSet<Guid>();
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                ids.Add(reader.GetGuid(0));
            }

            return ids;
        });
        return writes.Select(w => written.Contains(w.Id)).ToList();
    }

    /// <summary>
    /// Cancels a job for its owner: a queued job becomes <c>cancelled</c> at once (no worker will start it); a running
    /// one gets <c>cancel_requested_at</c>, and its worker ends it as <c>cancelled</c> with the text so far.
    /// Returns the job afterwards, or null when the tenant has no such job.
    /// </summary>
    public async Task<Job?> CancelAsync(Guid id, string tenantId, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        var cancelled = await db.Jobs
            .Where(j => j.Id == id && j.TenantId == tenantId && j.Status == JobStatuses.Queued)
            .ExecuteUpdateAsync(s => s
                .SetProperty(j => j.Status, JobStatuses.Cancelled)
                .SetProperty(j => j.CancelRequestedAt, now)
                .SetProperty(j => j.FinishedAt, now), ct);
        if (cancelled == 0)
        {
            await db.Jobs
                .Where(j => j.Id == id && j.TenantId == tenantId && j.Status == JobStatuses.Running && j.CancelRequestedAt == null)
                .ExecuteUpdateAsync(s => s.SetProperty(j => j.CancelRequestedAt, now), ct);
        }

        return await db.Jobs.AsNoTracking().SingleOrDefaultAsync(j => j.Id == id && j.TenantId == tenantId, ct);
    }

    /// <summary>Of the given running jobs, those whose cancellation was requested.</summary>
    public async Task<IReadOnlyList<Guid>> FindCancelRequestedAsync(IReadOnlyCollection<Guid> ids, CancellationToken ct)
    {
        if (ids.Count == 0)
        {
            return [];
        }

        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Jobs.Where(j => ids.Contains(j.Id) && j.CancelRequestedAt != null && j.Status == JobStatuses.Running)
            .Select(j => j.Id).ToListAsync(ct);
    }

    /// <summary>
    /// Records the text of running jobs so far (for streams), all in one statement; rows no longer running are left
    /// alone. The <c>jobs_notify_progress</c> trigger wakes the Producer's listeners.
    /// </summary>
    public async Task WriteProgressAsync(Guid[] ids, string[] texts, int[] tokens, CancellationToken ct) =>
        await RetryTransientAsync(async () =>
        {
            await using var command = data.CreateCommand($"""
                UPDATE jobs AS j SET partial_text = d.text, partial_tokens = d.tokens
                FROM unnest($1, $2, $3) AS d(id, text, tokens), ({LockInIdOrder("status = 'running'")}) AS l
                WHERE j.id = d.id AND j.id = l.id
                """);
            AddArray(command, ids, NpgsqlDbType.Uuid);
            AddArray(command, texts, NpgsqlDbType.Text);
            AddArray(command, tokens, NpgsqlDbType.Integer);
            return await command.ExecuteNonQueryAsync(ct);
        });

    /// <summary>
    /// A tenant's jobs, newest first: optionally of one status, created in [<paramref name="from"/>, <paramref name="to"/>),
    /// after the cursor <paramref name="after"/> (a job id; ids are time-ordered).
    /// </summary>
    public async Task<List<Job>> ListAsync(
        string tenantId, string? status, DateTimeOffset? from, DateTimeOffset? to, Guid? after, bool interactiveOnly, int limit, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        var query = db.Jobs.AsNoTracking().Where(j => j.TenantId == tenantId);
        if (interactiveOnly)
        {
            query = query.Where(j => j.BatchId == null);
        }

        if (status is not null)
        {
            query = query.Where(j => j.Status == status);
        }

        if (from is { } f)
        {
            query = query.Where(j => j.CreatedAt >= f);
        }

        if (to is { } t)
        {
            query = query.Where(j => j.CreatedAt < t);
        }

        if (after is { } cursor)
        {
            query = query.Where(j => j.Id.CompareTo(cursor) < 0);
        }

        return await query.OrderByDescending(j => j.Id).Take(limit).ToListAsync(ct);
    }

    /// <summary>Marks queued jobs whose deadline has passed as <c>expired</c>. Returns how many.</summary>
    public async Task<int> ExpireOverdueAsync(CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Jobs
            .Where(j => j.Status == JobStatuses.Queued && j.Deadline != null && j.Deadline < now)
            .ExecuteUpdateAsync(s => s.SetProperty(j => j.Status, JobStatuses.Expired).SetProperty(j => j.FinishedAt, now), ct);
    }

    /// <summary>Writes a successful result. Returns false (and changes nothing) when the job was already final.</summary>
    public async Task<bool> CompleteAsync(Guid id, JobResult result, CancellationToken ct) =>
        (await WriteResultsAsync([new ResultWrite(id, JobStatuses.Succeeded, result)], ct))[0];

    /// <summary>Marks a job failed with a reason. Returns false (and changes nothing) when it was already final.</summary>
    public async Task<bool> FailAsync(Guid id, string error, int? promptTokens, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        var updated = await db.Jobs
            .Where(j => j.Id == id && !FinalStatuses.Contains(j.Status))
            .ExecuteUpdateAsync(s => s
                .SetProperty(j => j.Status, JobStatuses.Failed)
                .SetProperty(j => j.Error, error)
                .SetProperty(j => j.PromptTokens, promptTokens)
                .SetProperty(j => j.PartialText, (string?)null)
                .SetProperty(j => j.FinishedAt, now), ct);
        return updated == 1;
    }

    /// <summary>
    /// An operator's replay of a failed job (from its dead letter): the job is queued again, unpublished (the publish
    /// sweep, or the batch releaser for a batch line, sends it), with its attempts, result and error cleared and its
    /// replay count raised, so its next final state owes a new event. Only a <c>failed</c> job is replayed, and a batch
    /// line only while its batch runs (the batch row is locked against the finalizer meanwhile).
    /// </summary>
    public async Task<ReplayOutcome> ReplayFailedAsync(Guid id, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        // A transaction under the retrying execution strategy: the whole unit is retried, not a statement.
        return await db.Database.CreateExecutionStrategy().ExecuteAsync(async () =>
        {
            await using var transaction = await db.Database.BeginTransactionAsync(ct);
            var job = await db.Jobs.AsNoTracking().SingleOrDefaultAsync(j => j.Id == id, ct);
            if (job is null)
            {
                return new ReplayOutcome(ReplayResult.NotFound, null);
            }

            if (job.Status != JobStatuses.Failed)
            {
                return new ReplayOutcome(ReplayResult.NotFailed, job);
            }

            if (job.BatchId is not null)
            {
                var batchStatus = await db.Database
                    .SqlQuery<string>($"SELECT status AS \"Value\" FROM batches WHERE id = {job.BatchId} FOR SHARE")
                    .SingleOrDefaultAsync(ct);
                if (batchStatus != "in_progress")
                {
                    return new ReplayOutcome(ReplayResult.BatchEnded, job);
                }
            }

            await db.Jobs.Where(j => j.Id == id && j.Status == JobStatuses.Failed).ExecuteUpdateAsync(s => s
                .SetProperty(j => j.Status, JobStatuses.Queued)
                .SetProperty(j => j.Error, (string?)null)
                .SetProperty(j => j.FinishReason, (string?)null)
                .SetProperty(j => j.OutputText, (string?)null)
                .SetProperty(j => j.PromptTokens, (int?)null)
                .SetProperty(j => j.CompletionTokens, (int?)null)
                .SetProperty(j => j.CachedTokens, (int?)null)
                .SetProperty(j => j.Logprobs, (string?)null)
                .SetProperty(j => j.Choices, (string?)null)
                .SetProperty(j => j.PartialText, (string?)null)
                .SetProperty(j => j.PartialTokens, (int?)null)
                .SetProperty(j => j.StartedAt, (DateTimeOffset?)null)
                .SetProperty(j => j.FinishedAt, (DateTimeOffset?)null)
                .SetProperty(j => j.QueuedAt, (DateTimeOffset?)null)
                .SetProperty(j => j.WorkerId, (string?)null)
                .SetProperty(j => j.LeaseExpiresAt, (DateTimeOffset?)null)
                .SetProperty(j => j.CancelRequestedAt, (DateTimeOffset?)null)
                .SetProperty(j => j.EventSentAt, (DateTimeOffset?)null)
                .SetProperty(j => j.Attempts, 0)
                .SetProperty(j => j.Replays, j => j.Replays + 1), ct);
            await transaction.CommitAsync(ct);
            return new ReplayOutcome(ReplayResult.Replayed, await db.Jobs.AsNoTracking().SingleAsync(j => j.Id == id, ct));
        });
    }
    /// <summary>Every column of <c>jobs</c>, in the order <see cref="ReadJob"/> reads them (a test compares with EF's mapping).</summary>
    private const string JobColumns =
        "j.id, j.tenant_id, j.status, j.idempotency_key, j.request_hash, j.request, j.output_text, j.finish_reason, " +
        "j.prompt_tokens, j.completion_tokens, j.cached_tokens, j.logprobs, j.choices, j.created_at, j.queued_at, j.started_at, " +
        "j.finished_at, j.error, j.attempts, j.worker_id, j.deadline, j.cancel_requested_at, j.batch_id, j.custom_id, " +
        "j.line_number, j.queue, j.lease_expires_at, j.event_sent_at, j.webhook_url, j.partial_text, j.partial_tokens, " +
        "j.estimated_tokens, j.replays";

    private static Job ReadJob(NpgsqlDataReader r)
    {
        string? Text(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        int? Int(int i) => r.IsDBNull(i) ? null : r.GetInt32(i);
        DateTimeOffset? At(int i) => r.IsDBNull(i) ? null : r.GetFieldValue<DateTimeOffset>(i);
        return new Job
        {
            Id = r.GetGuid(0), TenantId = r.GetString(1), Status = r.GetString(2), IdempotencyKey = Text(3), RequestHash = Text(4),
            Request = r.GetString(5), OutputText = Text(6), FinishReason = Text(7), PromptTokens = Int(8), CompletionTokens = Int(9),
            CachedTokens = Int(10), Logprobs = Text(11), Choices = Text(12), CreatedAt = r.GetFieldValue<DateTimeOffset>(13),
            QueuedAt = At(14), StartedAt = At(15), FinishedAt = At(16), Error = Text(17), Attempts = r.GetInt32(18), WorkerId = Text(19),
            Deadline = At(20), CancelRequestedAt = At(21), BatchId = Text(22), CustomId = Text(23), LineNumber = Int(24), Queue = Text(25),
            LeaseExpiresAt = At(26), EventSentAt = At(27), WebhookUrl = Text(28), PartialText = Text(29), PartialTokens = Int(30),
            EstimatedTokens = Int(31), Replays = r.GetInt32(32),
        };
    }

    /// <summary>Adds a parameter holding <paramref name="values"/> as a PostgreSQL array of <paramref name="element"/> (nulls kept).</summary>
    private static void AddArray<T>(NpgsqlCommand command, T[] values, NpgsqlDbType element) =>
        command.Parameters.Add(new NpgsqlParameter { Value = values, NpgsqlDbType = NpgsqlDbType.Array | element });

    /// <summary>
    /// The rows of <c>$1</c> (a uuid array) matching <paramref name="condition"/>, locked in id order. Every statement
    /// that updates many jobs at once locks through this (or orders its <c>FOR UPDATE</c> by id), so two of them can
    /// never wait for each other in a cycle: group commits run side by side without deadlocks.
    /// </summary>
    internal static string LockInIdOrder(string condition) => $"SELECT id FROM jobs WHERE id = ANY($1) AND {condition} ORDER BY id FOR UPDATE";

    /// <summary>Runs a plain Npgsql statement again after a transient failure (as EF's retrying strategy does for its own).</summary>
    private static async Task<T> RetryTransientAsync<T>(Func<Task<T>> run)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await run();
            }
            catch (NpgsqlException e) when (e.IsTransient && attempt < 4)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20 * attempt));
            }
        }
    }
}

public enum ReplayResult
{
    Replayed,
    NotFound,
    NotFailed,
    BatchEnded,
}

/// <summary>What a replay did, and the job as it is now (null when unknown).</summary>
public sealed record ReplayOutcome(ReplayResult Result, Job? Job);

/// <summary>A claim in <see cref="JobStore.TryStartManyAsync"/>: the arguments of <see cref="JobStore.TryStartAsync"/>.</summary>
public sealed record StartRequest(Guid Id, string WorkerId, bool ReclaimRunning, TimeSpan Lease);

/// <summary>A final result in <see cref="JobStore.WriteResultsAsync"/>: <c>succeeded</c>, or <c>cancelled</c> with the text so far.</summary>
public sealed record ResultWrite(Guid Id, string Status, JobResult Result);
