using LlmServing.Contracts;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace LlmServing.ResultStore.Jobs;

/// <summary>The result of a finished generation, as written by a worker.</summary>
public sealed record JobResult(string OutputText, string FinishReason, int PromptTokens, int CompletionTokens);

/// <summary>
/// Job state changes. Each is one conditional UPDATE, so they are atomic and idempotent: a job never moves
/// out of a final state, and a second "completed" for the same job changes nothing.
/// </summary>
public sealed class JobStore(IDbContextFactory<LlmServingDbContext> contexts, TimeProvider clock)
{
    private static readonly string[] FinalStatuses = [JobStatuses.Succeeded, JobStatuses.Failed, JobStatuses.Cancelled];

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

    public async Task<Job?> FindAsync(Guid id, string tenantId, CancellationToken ct)
    {
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Jobs.AsNoTracking().SingleOrDefaultAsync(j => j.Id == id && j.TenantId == tenantId, ct);
    }

    /// <summary>Records that the broker confirmed the job's message.</summary>
    public async Task MarkPublishedAsync(Guid id, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        await db.Jobs.Where(j => j.Id == id && j.QueuedAt == null)
            .ExecuteUpdateAsync(s => s.SetProperty(j => j.QueuedAt, now), ct);
    }

    /// <summary>Accepted jobs whose message the broker never confirmed, oldest first.</summary>
    public async Task<IReadOnlyList<Job>> FindUnpublishedAsync(TimeSpan minAge, int limit, CancellationToken ct)
    {
        var before = clock.GetUtcNow() - minAge;
        await using var db = await contexts.CreateDbContextAsync(ct);
        return await db.Jobs.AsNoTracking()
            .Where(j => j.QueuedAt == null && j.Status == JobStatuses.Queued && j.CreatedAt <= before)
            .OrderBy(j => j.CreatedAt)
            .Take(limit)
            .ToListAsync(ct);
    }

    /// <summary>
    /// Claims a job for a worker: <c>queued</c> (or <c>running</c>, after a crash and redelivery) becomes
    /// <c>running</c> and <c>attempts</c> grows by one. Returns null when the job is unknown or already final,
    /// in which case the message is a duplicate and must be acknowledged without running it.
    /// </summary>
    public async Task<Job?> TryStartAsync(Guid id, string workerId, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        var claimed = await db.Jobs
            .Where(j => j.Id == id && (j.Status == JobStatuses.Queued || j.Status == JobStatuses.Running))
            .ExecuteUpdateAsync(s => s
                .SetProperty(j => j.Status, JobStatuses.Running)
                .SetProperty(j => j.StartedAt, now)
                .SetProperty(j => j.QueuedAt, j => j.QueuedAt ?? now)
                .SetProperty(j => j.Attempts, j => j.Attempts + 1)
                .SetProperty(j => j.WorkerId, workerId), ct);
        if (claimed == 0)
        {
            return null;
        }

        return await db.Jobs.AsNoTracking().SingleAsync(j => j.Id == id, ct);
    }

    /// <summary>Writes a successful result. Returns false (and changes nothing) when the job was already final.</summary>
    public async Task<bool> CompleteAsync(Guid id, JobResult result, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        await using var db = await contexts.CreateDbContextAsync(ct);
        var updated = await db.Jobs
            .Where(j => j.Id == id && !FinalStatuses.Contains(j.Status))
            .ExecuteUpdateAsync(s => s
                .SetProperty(j => j.Status, JobStatuses.Succeeded)
                .SetProperty(j => j.OutputText, result.OutputText)
                .SetProperty(j => j.FinishReason, result.FinishReason)
                .SetProperty(j => j.PromptTokens, result.PromptTokens)
                .SetProperty(j => j.CompletionTokens, result.CompletionTokens)
                .SetProperty(j => j.FinishedAt, now)
                .SetProperty(j => j.Error, (string?)null), ct);
        return updated == 1;
    }

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
                .SetProperty(j => j.FinishedAt, now), ct);
        return updated == 1;
    }
}
