using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.ResultStore.Webhooks;
using MassTransit;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Background;

/// <summary>
/// Sends the events of final states (ADR 0006): <see cref="JobCompleted"/>, <see cref="JobFailed"/> and
/// <see cref="BatchCompleted"/> on the bus, and a webhook delivery for each that has a target. It reads the rows, not
/// the code paths that wrote them, so an event is owed whoever wrote the final state (worker, reaper, expiry, cancel)
/// and still sent when that process died right after. Published before the rows are marked: at least once, with a
/// stable message id.
/// </summary>
public sealed class ResultEventDispatcher(
    ResultEventStore store, ResultStore.Batches.BatchLineStore lines, IBus bus, IOptions<WebhookOptions> options, TimeProvider clock, TenantUsageMetrics usage, JobOutcomeMetrics outcomes,
    ILogger<ResultEventDispatcher> logger) : BackgroundService
{
    private const int PageSize = 500;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            var sent = 0;
            try
            {
                // Bounded: rows stay locked while their events are published, and a broker that does not answer
                // must not hold them (or this loop) for long; what was not marked is sent on the next pass.
                using var pass = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                pass.CancelAfter(TimeSpan.FromSeconds(30));
                sent = await DispatchJobsAsync(pass.Token) + await DispatchBatchesAsync(pass.Token);
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                logger.LogWarning(e, "Sending result events failed; they stay owed and are retried");
            }

            if (sent < PageSize)
            {
                await Task.Delay(options.Value.PollInterval, clock, stoppingToken).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }
    }

    /// <summary>One page of owed job events; returns how many were sent.</summary>
    public async Task<int> DispatchJobsAsync(CancellationToken ct)
    {
        await using var claim = await store.ClaimJobsAsync(PageSize, ct);
        if (claim.Items.Count == 0)
        {
            return 0;
        }

        await Task.WhenAll(claim.Items.Select(job => PublishAsync(job, ct)));
        var deliveries = claim.Items.Where(j => j.WebhookUrl is not null).Select(JobWebhook).ToList();
        await claim.CompleteAsync(deliveries, ct);
        foreach (var job in claim.Items)
        {
            usage.Record(job.TenantId, job.Status, job.PromptTokens, job.CompletionTokens, job.CachedTokens);
            outcomes.Record(job.Status, job.CreatedAt, job.StartedAt, job.FinishedAt);
        }

        return claim.Items.Count;
    }

    /// <summary>One page of owed batch events; returns how many were sent.</summary>
    public async Task<int> DispatchBatchesAsync(CancellationToken ct)
    {
        await using var claim = await store.ClaimBatchesAsync(50, ct);
        if (claim.Items.Count == 0)
        {
            return 0;
        }

        var deliveries = new List<NewWebhookDelivery>();
        foreach (var batch in claim.Items)
        {
            var counts = await lines.CountsAsync(batch.Id, ct);
            var message = new BatchCompleted
            {
                BatchId = batch.Id, TenantId = batch.TenantId, Status = batch.Status, Total = counts.Total, Completed = counts.Completed,
                Failed = counts.Failed, Usage = new ResultUsage((int)counts.PromptTokens, (int)counts.CompletionTokens,
                    (int)(counts.PromptTokens + counts.CompletionTokens), (int)counts.CachedTokens),
                OutputFileId = batch.OutputFileId, ErrorFileId = batch.ErrorFileId, FinishedAt = batch.FinishedAt,
            };
            await bus.Publish(message, c => c.MessageId = ResultEventIds.ForBatch(batch.Id), ct);
            if (batch.WebhookUrl is not null)
            {
                deliveries.Add(BatchWebhook(batch, counts));
            }
        }

        await claim.CompleteAsync(deliveries, ct);
        return claim.Items.Count;
    }

    private Task PublishAsync(OwedJobEvent job, CancellationToken ct)
    {
        var id = ResultEventIds.ForJob(job.Id, job.Replays);
        var usage = Usage(job);
        return job.Status == JobStatuses.Succeeded
            ? bus.Publish(new JobCompleted
            {
                JobId = job.Id, TenantId = job.TenantId, Status = job.Status, FinishReason = job.FinishReason, OutputText = job.OutputText,
                Usage = usage, IdempotencyKey = job.IdempotencyKey, BatchId = job.BatchId, CustomId = job.CustomId, FinishedAt = job.FinishedAt,
            }, c => c.MessageId = id, ct)
            : bus.Publish(new JobFailed
            {
                JobId = job.Id, TenantId = job.TenantId, Status = job.Status, Error = job.Error, FinishReason = job.FinishReason,
                OutputText = job.OutputText, Usage = usage, IdempotencyKey = job.IdempotencyKey, BatchId = job.BatchId,
                CustomId = job.CustomId, FinishedAt = job.FinishedAt,
            }, c => c.MessageId = id, ct);
    }

    private static ResultUsage? Usage(OwedJobEvent job) =>
        job.PromptTokens is { } prompt
            ? new ResultUsage(prompt, job.CompletionTokens ?? 0, prompt + (job.CompletionTokens ?? 0), job.CachedTokens ?? 0)
            : null;

    private NewWebhookDelivery JobWebhook(OwedJobEvent job)
    {
        var type = job.Status switch
        {
            JobStatuses.Succeeded => "job.completed",
            JobStatuses.Cancelled => "job.cancelled",
            JobStatuses.Expired => "job.expired",
            _ => "job.failed",
        };
        var data = new JsonObject
        {
            ["id"] = job.Id.ToString(),
            ["object"] = "job",
            ["status"] = job.Status,
            ["finish_reason"] = job.FinishReason,
            ["output_text"] = job.OutputText,
            ["error"] = job.Error,
            ["usage"] = job.PromptTokens is { } prompt
                ? new JsonObject
                {
                    ["prompt_tokens"] = prompt, ["completion_tokens"] = job.CompletionTokens ?? 0,
                    ["total_tokens"] = prompt + (job.CompletionTokens ?? 0),
                    ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = job.CachedTokens ?? 0 },
                }
                : null,
            ["idempotency_key"] = job.IdempotencyKey,
            ["batch_id"] = job.BatchId,
            ["custom_id"] = job.CustomId,
            ["finished_at"] = job.FinishedAt?.ToUnixTimeSeconds(),
        };
        return Delivery(job.TenantId, type, job.Id.ToString(), job.WebhookUrl!, data);
    }

    private NewWebhookDelivery BatchWebhook(OwedBatchEvent batch, ResultStore.Batches.BatchCounts counts)
    {
        var data = new JsonObject
        {
            ["id"] = batch.Id,
            ["object"] = "batch",
            ["status"] = batch.Status,
            ["request_counts"] = new JsonObject { ["total"] = counts.Total, ["completed"] = counts.Completed, ["failed"] = counts.Failed },
            ["usage"] = new JsonObject
            {
                ["input_tokens"] = counts.PromptTokens, ["output_tokens"] = counts.CompletionTokens,
                ["total_tokens"] = counts.PromptTokens + counts.CompletionTokens,
                ["input_tokens_details"] = new JsonObject { ["cached_tokens"] = counts.CachedTokens },
            },
            ["output_file_id"] = batch.OutputFileId,
            ["error_file_id"] = batch.ErrorFileId,
        };
        return Delivery(batch.TenantId, $"batch.{batch.Status}", batch.Id, batch.WebhookUrl!, data);
    }

    /// <summary>The body, as OpenAI's webhook events: <c>{"id", "object": "event", "type", "created_at", "data"}</c>.</summary>
    private NewWebhookDelivery Delivery(string tenantId, string type, string subjectId, string url, JsonObject data)
    {
        var id = Guid.CreateVersion7();
        var body = new JsonObject
        {
            ["id"] = WebhookTargets.MessageId(id),
            ["object"] = "event",
            ["type"] = type,
            ["created_at"] = clock.GetUtcNow().ToUnixTimeSeconds(),
            ["data"] = data,
        };
        return new NewWebhookDelivery(id, tenantId, type, subjectId, url, body.ToJsonString());
    }
}
