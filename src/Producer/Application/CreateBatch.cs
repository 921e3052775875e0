using Hangfire;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Files;
using LlmServing.ResultStore.Tenants;
using Microsoft.Extensions.Options;

namespace LlmServing.Producer.Application;

/// <summary>
/// A batch as a request describes it, read and checked by the HTTP adapter: the tenant, its input file, the endpoint
/// of every line, and the options.
/// </summary>
public sealed record BatchDraft(string Tenant, string InputFileId, string Endpoint)
{
    /// <summary>The input file's size, for the enqueued-token estimate.</summary>
    public long InputBytes { get; init; }

    /// <summary>The metadata object as JSON text.</summary>
    public string? Metadata { get; init; }

    public string? WebhookUrl { get; init; }

    public int? OutputExpiresAfterSeconds { get; init; }

    /// <summary>The input file was the request's own body (so nothing else refers to it).</summary>
    public bool UploadedHere { get; init; }
}

/// <summary>
/// The "create a batch" use case: the tenant's enqueued-token quota, the batch row, and its ingestion job. The REST
/// endpoint is a thin adapter over it.
/// </summary>
public sealed class CreateBatch(
    BatchStore batches, BatchLineStore lines, FileStore files, IBackgroundJobClient jobs, IOptions<ProducerOptions> options,
    IOptions<RetentionOptions> retention, TenantSettingsStore settings)
{
    /// <summary>Stores a request body as the tenant's batch input file (it expires as batch files do).</summary>
    public async Task<(string FileId, long Bytes)> UploadAsync(string tenant, Stream body, CancellationToken ct)
    {
        var uploaded = await files.CreateAsync(tenant, "upload.jsonl", "batch", body, options.Value.MaxFileBytes, ct);
        await files.SetExpiryAsync([uploaded.Id], RetentionOptions.ExpiryOf(uploaded.CreatedAt, retention.Value.BatchFiles), ct);
        return (uploaded.Id, uploaded.Bytes);
    }

    /// <summary>Creates the batch and queues its ingestion; or a 429 (and the uploaded file deleted) when over the quota.</summary>
    public async Task<(Batch? Batch, BatchCounts? Counts, IResult? Problem)> StartAsync(BatchDraft draft, CancellationToken ct)
    {
        var o = options.Value;
        if (await QuotaProblemAsync(draft.Tenant, draft.InputBytes, ct) is { } overQuota)
        {
            if (draft.UploadedHere)
            {
                await files.DeleteAsync(draft.InputFileId, CancellationToken.None); // the body was the file: nothing refers to it
            }

            return (null, null, overQuota);
        }

        var batch = await batches.CreateAsync(new Batch
        {
            Id = BatchStore.NewId(),
            TenantId = draft.Tenant,
            Endpoint = draft.Endpoint,
            InputFileId = draft.InputFileId,
            Metadata = draft.Metadata,
            JobQueue = o.BatchJobQueue,
            WebhookUrl = draft.WebhookUrl,
            OutputExpiresAfterSeconds = draft.OutputExpiresAfterSeconds,
        }, ct);
        // Not in the batch's transaction: if this enqueue is lost, the stalled-ingestion reaper starts the batch.
        BatchIngestion.Enqueue(jobs, o.EffectiveIngestionQueue, batch.Id);
        return (batch, await lines.CountsAsync(batch.Id, ct), null);
    }

    /// <summary>
    /// The enqueued-token quota (Azure's enqueued-token limit): 429 when the tenant's enqueued batch work plus this
    /// file's estimate (its size / 4) exceeds its limit; null when within it or when there is no limit. Checked, not
    /// reserved: two batches created at the same moment may both pass.
    /// </summary>
    private async Task<IResult?> QuotaProblemAsync(string tenant, long fileBytes, CancellationToken ct)
    {
        var limit = (await settings.FindAsync(tenant, ct))?.MaxEnqueuedTokens ?? options.Value.MaxEnqueuedTokensPerTenant;
        if (limit <= 0)
        {
            return null;
        }

        var requested = fileBytes / 4;
        var enqueued = await lines.EnqueuedTokensAsync(tenant, ct);
        if (enqueued + requested <= limit)
        {
            return null;
        }

        return TypedResults.Problem(
            statusCode: StatusCodes.Status429TooManyRequests,
            title: "Enqueued token limit reached",
            detail: $"This tenant has {enqueued} estimated tokens of batch work enqueued; this file adds about {requested} " +
                    $"(its size / 4), over the limit of {limit}. Retry when some of it has finished.",
            extensions: new Dictionary<string, object?> { ["limit"] = limit, ["enqueued"] = enqueued, ["requested"] = requested });
    }
}
