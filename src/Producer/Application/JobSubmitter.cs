using System.Security.Cryptography;
using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.ResultStore.Jobs;
using LlmServing.ResultStore.Webhooks;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Messaging;

namespace LlmServing.Producer.Application;

/// <summary>
/// Accepting one job, whatever the route (<c>/v1/jobs</c>, <c>/v1/chat/completions</c>, <c>/v1/completions</c>):
/// validation, webhook target, idempotency key, the per-tenant cap, the durable row, then the publish.
/// </summary>
public sealed class JobSubmitter(
    JobStore store, JobPublisher publisher, IOptions<ProducerOptions> options,
    WebhookTargetPolicy webhookPolicy, WebhookStore webhooks, SubmitStageMetrics stages) : IAsyncDisposable, IDisposable
{
    /// <summary>Inserts of concurrent submissions without an idempotency key, grouped into one transaction (group commit).</summary>
    private readonly ResultStore.GroupCommit<Job, bool> _inserts = new(store.CreateManyAsync);

    /// <summary>
    /// The stored job and whether this call created it (false: an idempotent replay, for the same
    /// <paramref name="idempotencyKey"/>); or the problem to answer.
    /// </summary>
    public async Task<(Job? Job, bool Created, IResult? Problem)> SubmitAsync(string tenant, string idempotencyKey, CreateJobRequest request, CancellationToken ct)
    {
        var (parameters, messages, invalid) = await CheckAsync(tenant, request, ct);
        if (invalid is not null)
        {
            return (null, false, invalid);
        }

        if (idempotencyKey.Length > 255)
        {
            return (null, false, Problems.Of(StatusCodes.Status400BadRequest, "Idempotency-Key too long", "The Idempotency-Key header has at most 255 characters."));
        }

        var (job, message) = NewJob(tenant, request, parameters!, messages, idempotencyKey);
        var (kept, created, refused) = await StoreAsync(job, ct);
        if (refused is not null)
        {
            return (null, false, refused);
        }

        var stored = kept!; // StoreAsync answers a job or a problem
        System.Diagnostics.Activity.Current?.SetTag("llmserving.job_id", stored.Id.ToString());
        if (created)
        {
            // The job is durable now; if the broker is unreachable the sweep publishes it later.
            var publishing = System.Diagnostics.Stopwatch.GetTimestamp();
            if (await publisher.TryPublishAsync(stored, ct, message))
            {
                stored.QueuedAt = DateTimeOffset.UtcNow;
            }

            stages.Observe("publish", publishing);
        }

        return (stored, created, null);
    }

    /// <summary>The request's rules (the validator's, then its webhook target); a 422 with every error by field.</summary>
    private async Task<(GenerationParameters? Parameters, List<ChatMessage>? Messages, IResult? Problem)> CheckAsync(
        string tenant, CreateJobRequest request, CancellationToken ct)
    {
        var (parameters, messages, errors) = JobRequestValidator.Validate(request, options.Value);
        if (parameters is not null && request.WebhookUrl is { } webhookUrl
            && await WebhookTargets.CheckTargetAsync(webhookUrl, tenant, webhookPolicy, webhooks, ct) is { } webhookProblem)
        {
            (parameters, errors) = (null, new Dictionary<string, string[]> { ["webhook_url"] = [webhookProblem] });
        }

        return parameters is not null
            ? (parameters, messages, null)
            : (null, null, TypedResults.Problem(new HttpValidationProblemDetails(errors)
            {
                Status = StatusCodes.Status422UnprocessableEntity,
                Title = "The job request is invalid",
                Type = "https://tools.ietf.org/html/rfc4918#section-11.2",
            }));
    }

    /// <summary>The job row and its message, as the worker will read it.</summary>
    private (Job Job, GenerateCompletion Message) NewJob(
        string tenant, CreateJobRequest request, GenerationParameters parameters, List<ChatMessage>? messages, string idempotencyKey)
    {
        var id = Guid.CreateVersion7();
        DateTimeOffset? deadline = request.QueueTimeoutSeconds is { } seconds ? DateTimeOffset.UtcNow.AddSeconds(seconds) : null;
        var message = new GenerateCompletion
        {
            Deadline = deadline, JobId = id, TenantId = tenant, Prompt = request.Prompt, Messages = messages, Parameters = parameters,
        };
        var job = new Job
        {
            Id = id,
            TenantId = tenant,
            IdempotencyKey = idempotencyKey.Length > 0 ? idempotencyKey : null,
            // Of the parsed request, not the raw bytes: the same request with other whitespace or key order is the same.
            // Only an idempotency key needs it (to refuse the key's reuse with another request).
            RequestHash = idempotencyKey.Length > 0
                ? Convert.ToHexString(SHA256.HashData(JsonSerializer.SerializeToUtf8Bytes(request, JobPublisher.MessageJson)))
                : null,
            Deadline = deadline,
            Request = JsonSerializer.Serialize(message, JobPublisher.MessageJson),
            Queue = options.Value.JobQueue,
            WebhookUrl = request.WebhookUrl,
        };
        return (job, message);
    }

    /// <summary>
    /// Inserts the job: grouped with concurrent submissions, or on its own when it has an idempotency key (a replay
    /// returns the stored job) or the tenant has a queued-jobs cap (counted under a lock, 429 when full).
    /// </summary>
    private async Task<(Job? Stored, bool Created, IResult? Problem)> StoreAsync(Job job, CancellationToken ct)
    {
        var o = options.Value;
        var inserting = System.Diagnostics.Stopwatch.GetTimestamp();
        var (capped, created) = o.MaxQueuedJobsPerTenant > 0
            ? await store.CreateCappedAsync(job, o.MaxQueuedJobsPerTenant, ct)
            : job.IdempotencyKey is null
                ? (job, await _inserts.SubmitAsync(job, ct))
                : await store.CreateAsync(job, ct);
        stages.Observe("insert", inserting);
        if (capped is not { } stored)
        {
            return (null, false, Problems.RetryAfter(5, Problems.Of(StatusCodes.Status429TooManyRequests, "Too many queued jobs",
                $"This tenant already has {o.MaxQueuedJobsPerTenant} jobs waiting; retry when some have started.")));
        }

        if (!created && stored.RequestHash != job.RequestHash)
        {
            return (null, false, Problems.Of(StatusCodes.Status422UnprocessableEntity, "Idempotency-Key reused",
                $"The Idempotency-Key '{job.IdempotencyKey}' was already used for job {stored.Id} with a different request body."));
        }

        return (stored, created, null);
    }

    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    public ValueTask DisposeAsync() => _inserts.DisposeAsync();
}
