using System.Text.Json;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.Producer.Batches;
using LlmServing.Producer.Files;
using LlmServing.Producer.Tenants;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Jobs;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;

namespace LlmServing.Producer.Jobs;

/// <summary>
/// OpenAI's synchronous endpoints over the same queue: <c>POST /v1/chat/completions</c> and <c>POST /v1/completions</c>
/// accept OpenAI's request, queue an interactive job, wait for it and answer OpenAI's response shape; <c>GET
/// /v1/models</c> lists the model. Because they ride the queue they work while workers are at zero: a request waits
/// for a worker up to <see cref="ProducerOptions.SyncStartTimeout"/>, then 503 with Retry-After. A client that
/// disconnects cancels its job.
/// </summary>
public static class OpenAiApi
{
    public static IEndpointRouteBuilder MapOpenAiApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1").WithTags("OpenAI-compatible");
        group.MapPost("/chat/completions", (HttpContext http, JobSubmitter submitter, JobStore store, IOptions<ProducerOptions> options,
                    IOptions<JsonOptions> json, ILoggerFactory logs) => CompleteAsync(http, chat: true, submitter, store, options.Value, json.Value, logs))
            .RequireRateLimiting(JobsApi.SubmitPolicy)
            .WithSummary("Create a chat completion (OpenAI's shape; waits for the result)")
            .WithDescription("The request and response of OpenAI's Chat Completions API. `stream: true` is not supported yet.");
        group.MapPost("/completions", (HttpContext http, JobSubmitter submitter, JobStore store, IOptions<ProducerOptions> options,
                    IOptions<JsonOptions> json, ILoggerFactory logs) => CompleteAsync(http, chat: false, submitter, store, options.Value, json.Value, logs))
            .RequireRateLimiting(JobsApi.SubmitPolicy)
            .WithSummary("Create a completion (OpenAI's legacy shape; waits for the result)");
        group.MapGet("/models", (IOptions<ProducerOptions> options) => TypedResults.Ok(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(new JsonObject
            {
                ["id"] = options.Value.ModelName, ["object"] = "model", ["created"] = 0, ["owned_by"] = "llmserving",
            }),
        })).WithSummary("List models (the one the workers serve)");
        return app;
    }

    private static async Task<IResult> CompleteAsync(
        HttpContext http, bool chat, JobSubmitter submitter, JobStore store, ProducerOptions o, JsonOptions json, ILoggerFactory logs)
    {
        var ct = http.RequestAborted;
        if (!http.Request.HasJsonContentType())
        {
            return Problems.Of(StatusCodes.Status415UnsupportedMediaType, "Unsupported content type", "Send the request as JSON.");
        }

        var body = await RequestBodies.ReadLimitedAsync(http.Request.Body, o.MaxRequestBytes, ct);
        if (body is null)
        {
            return Problems.Of(StatusCodes.Status413PayloadTooLarge, "Request too large", $"A request has at most {o.MaxRequestBytes} bytes.");
        }

        CreateJobRequest? request;
        try
        {
            request = JsonSerializer.Deserialize<CreateJobRequest>(body, json.SerializerOptions);
        }
        catch (JsonException e)
        {
            return Problems.Of(StatusCodes.Status400BadRequest, "Malformed JSON", $"The body is not a valid request: {e.Message}");
        }

        if (request is null)
        {
            return Problems.Of(StatusCodes.Status400BadRequest, "Malformed JSON", "The body must be a JSON object.");
        }

        if (chat ? request.Prompt is not null || request.Messages is null : request.Messages is not null || request.Prompt is null)
        {
            return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid request",
                chat ? "/v1/chat/completions takes 'messages' (not 'prompt')." : "/v1/completions takes 'prompt' as one string (not 'messages').");
        }

        if (request.QueueTimeoutSeconds is not null || request.WebhookUrl is not null)
        {
            return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid request",
                "'queue_timeout_seconds' and 'webhook_url' are for queued jobs (POST /v1/jobs); this endpoint waits for its result.");
        }

        var model = request.OtherFields?.TryGetValue("model", out var m) == true && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
        var (job, _, problem) = await submitter.SubmitAsync(http, request, ct);
        if (problem is not null)
        {
            return problem;
        }

        var started = DateTimeOffset.UtcNow;
        var final = false;
        try
        {
            while (true)
            {
                // PostgreSQL over a fresh token: a disconnect must still let the cancel below run.
                job = await store.FindAsync(job!.Id, http.Tenant(), CancellationToken.None);
                if (job is null)
                {
                    return Problems.Of(StatusCodes.Status500InternalServerError, "Job lost", "The job row disappeared.");
                }

                if (JobStatuses.IsFinal(job.Status))
                {
                    final = true;
                    return Answer(job, chat, model);
                }

                var waited = DateTimeOffset.UtcNow - started;
                if ((job.Status == JobStatuses.Queued && waited > o.SyncStartTimeout) || waited > o.SyncTimeout)
                {
                    var noWorker = job.Status == JobStatuses.Queued;
                    final = await store.CancelAsync(job.Id, http.Tenant(), CancellationToken.None) is not null;
                    http.Response.Headers.RetryAfter = "10";
                    return noWorker
                        ? Problems.Of(StatusCodes.Status503ServiceUnavailable, "No worker available",
                            $"No worker started the job within {o.SyncStartTimeout.TotalSeconds:0} s (workers may be starting from zero); it was cancelled. Retry, or queue it with POST /v1/jobs.")
                        : Problems.Of(StatusCodes.Status504GatewayTimeout, "Generation took too long",
                            $"The job did not finish within {o.SyncTimeout.TotalSeconds:0} s; it was cancelled.");
                }

                await Task.Delay(TimeSpan.FromMilliseconds(50), ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return Results.Empty; // the client left; the finally cancels its job
        }
        finally
        {
            if (!final && ct.IsCancellationRequested && job is not null)
            {
                await store.CancelAsync(job.Id, http.Tenant(), CancellationToken.None);
                logs.CreateLogger(typeof(OpenAiApi)).LogInformation("Client disconnected: job {JobId} cancelled", job.Id);
            }
        }
    }

    private static IResult Answer(Job job, bool chat, string? model)
    {
        if (job.Status != JobStatuses.Succeeded)
        {
            return job.Status == JobStatuses.Expired
                ? Problems.Of(StatusCodes.Status503ServiceUnavailable, "Job expired", "The job expired before a worker started it.")
                : Problems.Of(StatusCodes.Status500InternalServerError, $"Job {job.Status}", job.Error ?? $"The job ended {job.Status}.");
        }

        var row = new BatchResultRow(job.Id, 0, null, job.Status, job.OutputText, job.FinishReason, job.PromptTokens, job.CompletionTokens,
            null, model, job.FinishedAt, job.CachedTokens, job.Logprobs, job.Choices);
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            BatchShapes.WriteCompletion(writer, row, chat);
        }

        return Results.Bytes(buffer.WrittenMemory.ToArray(), "application/json");
    }
}
