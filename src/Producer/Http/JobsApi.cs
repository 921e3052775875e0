using System.Security.Cryptography;
using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.ResultStore.Jobs;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using Microsoft.OpenApi;
using LlmServing.Producer.Application;
using LlmServing.Producer.Messaging;

namespace LlmServing.Producer.Http;

public static class JobsApi
{
    public const string SubmitPolicy = "job-submissions";

    public static IEndpointRouteBuilder MapJobsApi(this IEndpointRouteBuilder app)
    {
        var jobs = app.MapGroup("/v1/jobs").WithTags("Jobs");
        jobs.MapPost("", CreateJob)
            .WithName("CreateJob")
            .RequireRateLimiting(SubmitPolicy)
            .WithSummary("Queue an inference job")
            .WithDescription("Accepts a completion (`prompt`) or a chat (`messages`). Answers 202 with the job and its " +
                             "`Location` once the job is durable in PostgreSQL. An `Idempotency-Key` header returns the " +
                             "same job for the same key.")
            // The body is read by the handler (so a wrong content type gets a specific 415), hence no Accepts():
            // it would make routing answer 415 itself. The schema is added to the OpenAPI document here instead.
            .AddOpenApiOperationTransformer(async (operation, context, ct) =>
            {
                var schema = await context.GetOrCreateSchemaAsync(typeof(CreateJobRequest), null, ct);
                operation.RequestBody = new OpenApiRequestBody
                {
                    Required = true,
                    Content = new Dictionary<string, OpenApiMediaType> { ["application/json"] = new() { Schema = schema } },
                };
            })
            .Produces<JobResponse>(StatusCodes.Status202Accepted)
            .ProducesValidationProblem(StatusCodes.Status422UnprocessableEntity)
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status415UnsupportedMediaType);
        jobs.MapGet("/{id:guid}", GetJob)
            .WithName("GetJob")
            .WithSummary("Get a job's status and result")
            .WithDescription("`?wait=N` long-polls up to N seconds until the job reaches a final state.")
            .Produces<JobResponse>()
            .ProducesProblem(StatusCodes.Status404NotFound);
        jobs.MapGet("", ListJobs)
            .WithName("ListJobs")
            .WithSummary("List jobs, newest first")
            .WithDescription("`status`, `created_after` / `created_before` (Unix seconds), `limit` (1..100), `after` (the last id of " +
                             "the previous page); batch lines only with `include_batch_lines=true`.");
        jobs.MapDelete("/{id:guid}", DeleteJob)
            .WithName("DeleteJob")
            .WithSummary("Delete a final job")
            .WithDescription("Its usage stays counted. 409 while it runs (cancel it first), for a batch line (it goes with its batch), " +
                             "or for the moment until its result event has been sent.")
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict);
        jobs.MapPost("/{id:guid}/cancel", CancelJob)
            .WithName("CancelJob")
            .WithSummary("Cancel a job")
            .WithDescription("A queued job is never started and ends `cancelled` at once. A running job is dropped at its " +
                             "worker's next decode step and ends `cancelled` with the text generated so far " +
                             "(`cancel_requested_at` is set meanwhile). 409 when the job already ended.")
            .Produces<JobResponse>()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict);
        return app;
    }

    private static async Task<IResult> CancelJob(Guid id, JobStore store, HttpContext http, CancellationToken ct)
    {
        var before = await store.FindAsync(id, http.Tenant(), ct);
        if (before is null)
        {
            return Problems.Of(StatusCodes.Status404NotFound, "Job not found", $"There is no job with id {id}.");
        }

        if (JobStatuses.IsFinal(before.Status))
        {
            return Problems.Of(StatusCodes.Status409Conflict, "Job already ended", $"Job {id} already ended with status '{before.Status}'.");
        }

        var job = await store.CancelAsync(id, http.Tenant(), ct);
        if (job is { Status: not (JobStatuses.Cancelled or JobStatuses.Queued or JobStatuses.Running) })
        {
            // It ended on its own between the check above and the cancel.
            return Problems.Of(StatusCodes.Status409Conflict, "Job already ended", $"Job {id} already ended with status '{job.Status}'.");
        }

        return TypedResults.Ok(ToResponse(job!));
    }

    private static async Task<IResult> CreateJob(HttpRequest http, JobRequestReader reader, JobSubmitter submitter, SubmitStageMetrics stages, CancellationToken ct)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var (request, invalid) = await reader.ReadAsync(http, ct);
        stages.Observe("read", started);
        if (invalid is not null)
        {
            return invalid;
        }

        var (stored, created, problem) = await submitter.SubmitAsync(http.HttpContext.Tenant(), http.Headers["Idempotency-Key"].ToString(), request!, ct);
        stages.Observe("total", started);
        if (problem is not null)
        {
            return problem;
        }

        if (!created)
        {
            http.HttpContext.Response.Headers["Idempotent-Replayed"] = "true";
        }

        return TypedResults.Accepted($"/v1/jobs/{stored!.Id}", ToResponse(stored));
    }

    private static async Task<Results<Ok<JobResponse>, ProblemHttpResult>> GetJob(
        Guid id,
        int? wait,
        HttpContext http,
        JobStore store,
        JobChangeListener changes,
        IOptions<ProducerOptions> options,
        CancellationToken ct)
    {
        var maxWait = options.Value.MaxWaitSeconds;
        if (wait is < 0 || wait > maxWait)
        {
            return TypedResults.Problem(statusCode: StatusCodes.Status400BadRequest, title: "Invalid wait",
                detail: $"'wait' is a number of seconds from 0 to {maxWait}.");
        }

        var deadline = DateTimeOffset.UtcNow.AddSeconds(wait ?? 0);
        using var subscription = wait > 0 ? changes.Subscribe(id) : null;
        while (true)
        {
            var job = await store.FindAsync(id, http.Tenant(), ct);
            if (job is null)
            {
                return TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Job not found",
                    detail: $"There is no job with id {id}.");
            }

            if (JobStatuses.IsFinal(job.Status) || DateTimeOffset.UtcNow >= deadline)
            {
                return TypedResults.Ok(ToResponse(job));
            }

            // Interactive jobs' final states wake the wait (the jobs_notify_progress trigger); batch lines raise no
            // notification and are looked at every 100 ms. A missed notification costs at most 2 s.
            var left = deadline - DateTimeOffset.UtcNow;
            var poll = TimeSpan.FromMilliseconds(job.BatchId is null ? 2000 : 100);
            await subscription!.WaitAsync(left < poll ? left : poll, ct);
        }
    }

    /// <summary>The last second <see cref="DateTimeOffset"/> can hold (9999-12-31T23:59:59Z).</summary>
    private const long MaxUnixSeconds = 253_402_300_799;

    private static async Task<IResult> ListJobs(
        HttpContext http, JobStore store, string? status, long? created_after, long? created_before, int? limit, Guid? after,
        bool? include_batch_lines, CancellationToken ct)
    {
        if (status is not null && !JobStatuses.IsFinal(status) && status is not (JobStatuses.Queued or JobStatuses.Running))
        {
            return Problems.Of(StatusCodes.Status400BadRequest, "Invalid status", "'status' is queued, running, succeeded, failed, cancelled or expired.");
        }

        foreach (var (name, value) in new[] { ("created_after", created_after), ("created_before", created_before) })
        {
            if (value is < 0 or > MaxUnixSeconds)
            {
                return Problems.Of(StatusCodes.Status400BadRequest, "Invalid time",
                    $"'{name}' is a Unix time in seconds from 0 to {MaxUnixSeconds} (9999-12-31).");
            }
        }

        var take = Math.Clamp(limit ?? 20, 1, 100);
        var page = await store.ListAsync(http.Tenant(), status,
            created_after is { } a ? DateTimeOffset.FromUnixTimeSeconds(a) : null,
            created_before is { } b ? DateTimeOffset.FromUnixTimeSeconds(b) : null,
            after, include_batch_lines != true, take + 1, ct);
        return TypedResults.Ok(new
        {
            @object = "list",
            data = page.Take(take).Select(ToResponse).ToList(),
            first_id = page.FirstOrDefault()?.Id,
            last_id = page.Take(take).LastOrDefault()?.Id,
            has_more = page.Count > take,
        });
    }

    private static async Task<IResult> DeleteJob(Guid id, HttpContext http, JobStore store, ResultStore.Retention.RetentionStore retention, CancellationToken ct)
    {
        if (await retention.DeleteFinalJobAsync(id, http.Tenant(), ct))
        {
            return TypedResults.Ok(new { id, @object = "job", deleted = true });
        }

        var job = await store.FindAsync(id, http.Tenant(), ct);
        return job switch
        {
            null => Problems.Of(StatusCodes.Status404NotFound, "Job not found", $"There is no job with id {id}."),
            { BatchId: not null } => Problems.Of(StatusCodes.Status409Conflict, "Batch line", $"Job {id} is a line of batch {job.BatchId}; it is deleted with its batch."),
            _ when !JobStatuses.IsFinal(job.Status) => Problems.Of(StatusCodes.Status409Conflict, "Job not final", $"Job {id} is {job.Status}; cancel it first."),
            _ => Problems.Of(StatusCodes.Status409Conflict, "Result event pending", $"Job {id}'s result event has not been sent yet; retry in a moment."),
        };
    }

    internal static JobResponse ToResponse(Job j)
    {
        static double? Ms(DateTimeOffset? from, DateTimeOffset? to) =>
            from is { } f && to is { } t ? Math.Round((t - f).TotalMilliseconds, 1) : null;

        return new JobResponse
        {
            Id = j.Id,
            Status = j.Status,
            CreatedAt = j.CreatedAt,
            QueuedAt = j.QueuedAt,
            StartedAt = j.StartedAt,
            FinishedAt = j.FinishedAt,
            OutputText = j.OutputText,
            FinishReason = j.FinishReason,
            Usage = j.CompletionTokens is { } c
                ? new UsageResponse(j.PromptTokens ?? 0, c, (j.PromptTokens ?? 0) + c) { PromptTokensDetails = new PromptTokensDetails(j.CachedTokens ?? 0) }
                : null,
            Timings = new JobTimings(Ms(j.CreatedAt, j.StartedAt), Ms(j.StartedAt, j.FinishedAt), Ms(j.CreatedAt, j.FinishedAt)),
            Error = j.Error,
            Attempts = j.Attempts,
            Deadline = j.Deadline,
            CancelRequestedAt = j.CancelRequestedAt,
            Logprobs = j.Logprobs is { } logprobs ? JsonDocument.Parse(logprobs).RootElement.Clone() : null,
            Choices = j.Choices is { } choices ? JsonDocument.Parse(choices).RootElement.Clone() : null,
        };
    }
}
