using System.Text.Json;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Jobs;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http.OpenAi;

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
        group.MapPost("/chat/completions", (HttpContext http, JobRequestReader reader, JobSubmitter submitter, JobStore store, JobFollower follower,
                    IOptions<ProducerOptions> options, ILoggerFactory logs) => CompleteAsync(http, chat: true, reader, submitter, store, follower, options.Value, logs))
            .RequireRateLimiting(JobsApi.SubmitPolicy)
            .WithSummary("Create a chat completion (OpenAI's shape; waits for the result)")
            .WithDescription("The request and response of OpenAI's Chat Completions API; `stream: true` answers " +
                             "`chat.completion.chunk` events ending in `[DONE]` (`stream_options.include_usage` adds the usage chunk).");
        group.MapPost("/completions", (HttpContext http, JobRequestReader reader, JobSubmitter submitter, JobStore store, JobFollower follower,
                    IOptions<ProducerOptions> options, ILoggerFactory logs) => CompleteAsync(http, chat: false, reader, submitter, store, follower, options.Value, logs))
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
        HttpContext http, bool chat, JobRequestReader reader, JobSubmitter submitter, JobStore store, JobFollower follower, ProducerOptions o, ILoggerFactory logs)
    {
        var ct = http.RequestAborted;
        var (request, invalid) = await reader.ReadAsync(http.Request, ct);
        if (request is null)
        {
            return invalid!;
        }

        var (stream, includeUsage, streamProblem) = StreamFields(request);
        if ((EndpointProblem(request, chat) ?? streamProblem) is { } problem)
        {
            return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid request", problem);
        }

        var model = request.OtherFields?.TryGetValue("model", out var m) == true && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
        var (job, _, refused) = await submitter.SubmitAsync(http.Tenant(), http.Request.Headers["Idempotency-Key"].ToString(), request, ct);
        if (refused is not null)
        {
            return refused;
        }

        var wait = new SyncWait(http, chat, model, store, follower, o, logs.CreateLogger(typeof(OpenAiApi)));
        return await wait.AnswerAsync(job!, stream ? new ChunkWriter(http, chat, job!.Id, model, includeUsage) : null);
    }

    /// <summary>What this endpoint refuses that <c>/v1/jobs</c> takes: the other endpoint's input, and the queued-job options.</summary>
    private static string? EndpointProblem(CreateJobRequest request, bool chat)
    {
        if (chat ? request.Prompt is not null || request.Messages is null : request.Messages is not null || request.Prompt is null)
        {
            return chat ? "/v1/chat/completions takes 'messages' (not 'prompt')." : "/v1/completions takes 'prompt' as one string (not 'messages').";
        }

        return request.QueueTimeoutSeconds is not null || request.WebhookUrl is not null
            ? "'queue_timeout_seconds' and 'webhook_url' are for queued jobs (POST /v1/jobs); this endpoint waits for its result."
            : null;
    }

    /// <summary>
    /// Waits for a submitted job as the synchronous endpoints do: for a worker to start it (up to
    /// <see cref="ProducerOptions.SyncStartTimeout"/>, since workers may be at zero), then for its end (up to
    /// <see cref="ProducerOptions.SyncTimeout"/>), streaming its deltas when asked. A job that cannot be answered
    /// (no worker, too slow, the client left) is cancelled, never left running for nobody.
    /// </summary>
    private sealed class SyncWait(
        HttpContext http, bool chat, string? model, JobStore store, JobFollower follower, ProducerOptions o, ILogger logger)
    {
        private readonly string _tenant = http.Tenant();
        private bool _final;

        public async Task<IResult> AnswerAsync(Job job, ChunkWriter? chunks)
        {
            var ct = http.RequestAborted;
            try
            {
                var started = await follower.WaitStartedAsync(job.Id, _tenant, o.SyncStartTimeout, ct);
                if (started is { Status: JobStatuses.Queued })
                {
                    _final = await store.CancelAsync(job.Id, _tenant, CancellationToken.None) is not null;
                    http.Response.Headers.RetryAfter = "10";
                    return Problems.Of(StatusCodes.Status503ServiceUnavailable, "No worker available",
                        $"No worker started the job within {o.SyncStartTimeout.TotalSeconds:0} s (workers may be starting from zero); it was cancelled. Retry, or queue it with POST /v1/jobs.");
                }

                return await FollowAsync(started?.Id ?? job.Id, chunks);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return Results.Empty; // the client left; the finally cancels its job
            }
            finally
            {
                if (!_final && ct.IsCancellationRequested)
                {
                    await store.CancelAsync(job.Id, _tenant, CancellationToken.None);
                    logger.LogInformation("Client disconnected: job {JobId} cancelled", job.Id);
                }
            }
        }

        private async Task<IResult> FollowAsync(Guid id, ChunkWriter? chunks)
        {
            var ct = http.RequestAborted;
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
            limit.CancelAfter(o.SyncTimeout);
            try
            {
                await foreach (var update in follower.FollowAsync(id, _tenant, 0, TimeSpan.FromSeconds(15), limit.Token))
                {
                    if (chunks is not null && update.Delta is not null)
                    {
                        await chunks.DeltaAsync(update.Delta, ct);
                    }

                    if (update.IsFinal && update.Delta is null)
                    {
                        _final = true;
                        if (chunks is null)
                        {
                            return Answer(update.Job, chat, model);
                        }

                        await chunks.EndAsync(update.Job, ct);
                        return Results.Empty;
                    }
                }
            }
            catch (OperationCanceledException) when (limit.IsCancellationRequested && !ct.IsCancellationRequested)
            {
                _final = await store.CancelAsync(id, _tenant, CancellationToken.None) is not null;
                var message = $"The job did not finish within {o.SyncTimeout.TotalSeconds:0} s; it was cancelled.";
                if (chunks is { Started: true })
                {
                    await chunks.ErrorAsync(message, ct);
                    return Results.Empty;
                }

                return Problems.Of(StatusCodes.Status504GatewayTimeout, "Generation took too long", message);
            }

            return Problems.Of(StatusCodes.Status500InternalServerError, "Job lost", "The job row disappeared.");
        }
    }

    /// <summary>Takes OpenAI's <c>stream</c> and <c>stream_options</c> out of the request (the job validator refuses them).</summary>
    private static (bool Stream, bool IncludeUsage, string? Problem) StreamFields(CreateJobRequest request)
    {
        var stream = false;
        var includeUsage = false;
        if (request.OtherFields is { } other)
        {
            if (other.Remove("stream", out var s))
            {
                if (s.ValueKind is not (JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null))
                {
                    return (false, false, "'stream' is true or false.");
                }

                stream = s.ValueKind == JsonValueKind.True;
            }

            if (other.Remove("stream_options", out var so) && so.ValueKind != JsonValueKind.Null)
            {
                if (!stream || so.ValueKind != JsonValueKind.Object)
                {
                    return (false, false, "'stream_options' is an object, and only with 'stream': true.");
                }

                foreach (var p in so.EnumerateObject())
                {
                    if (p.Name != "include_usage" || p.Value.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                    {
                        return (false, false, $"'stream_options.{p.Name}' is not supported; only 'include_usage' (true or false).");
                    }

                    includeUsage = p.Value.ValueKind == JsonValueKind.True;
                }
            }
        }

        if (stream && request.N is > 1)
        {
            return (false, false, "'n' above 1 cannot be streamed here; ask without 'stream' for several choices.");
        }

        if (stream && request.Logprobs is { ValueKind: JsonValueKind.True })
        {
            return (false, false, "'logprobs' cannot be streamed here; ask without 'stream' for log-probabilities.");
        }

        return (stream, includeUsage, null);
    }

    private static IResult Answer(Job job, bool chat, string? model)
    {
        if (job.Status != JobStatuses.Succeeded)
        {
            if (job.Status == JobStatuses.Failed && JobErrors.RequestErrorCode(job.Error) is { } code)
            {
                // The request could not run as asked: OpenAI answers 400 with its error shape and code.
                return TypedResults.Json(new
                {
                    error = new { message = job.Error, type = "invalid_request_error", param = code == "context_length_exceeded" ? "messages" : null, code },
                }, statusCode: StatusCodes.Status400BadRequest);
            }

            return job.Status == JobStatuses.Expired
                ? Problems.Of(StatusCodes.Status503ServiceUnavailable, "Job expired", "The job expired before a worker started it.")
                : Problems.Of(StatusCodes.Status500InternalServerError, $"Job {job.Status}", job.Error ?? $"The job ended {job.Status}.");
        }

        var row = new BatchResultRow(job.Id, 0, null, job.Status, job.OutputText, job.FinishReason, job.PromptTokens, job.CompletionTokens,
            null, model, job.FinishedAt, job.CachedTokens, job.Logprobs, job.Choices);
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            BatchOutputLines.WriteCompletion(writer, row, chat);
        }

        return Results.Bytes(buffer.WrittenMemory.ToArray(), "application/json");
    }

    /// <summary>OpenAI's streamed shapes: <c>chat.completion.chunk</c> or <c>text_completion</c> events, then <c>[DONE]</c>.</summary>
    private sealed class ChunkWriter(HttpContext http, bool chat, Guid jobId, string? model, bool includeUsage)
    {
        private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        public bool Started { get; private set; }

        private JsonObject Chunk(JsonNode? delta, string? finishReason) => new()
        {
            ["id"] = (chat ? "chatcmpl-" : "cmpl-") + jobId.ToString("N"),
            ["object"] = chat ? "chat.completion.chunk" : "text_completion",
            ["created"] = _created,
            ["model"] = model ?? "llmserving",
            ["choices"] = new JsonArray(chat
                ? new JsonObject { ["index"] = 0, ["delta"] = delta ?? new JsonObject(), ["logprobs"] = null, ["finish_reason"] = finishReason }
                : new JsonObject { ["index"] = 0, ["text"] = delta?.GetValue<string>() ?? "", ["logprobs"] = null, ["finish_reason"] = finishReason }),
        };

        private async Task StartAsync(CancellationToken ct)
        {
            if (Started)
            {
                return;
            }

            Started = true;
            await JobStreamApi.StartAsync(http);
            if (chat)
            {
                await SendAsync(Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "" }, null), ct);
            }
        }

        private Task SendAsync(JsonObject chunk, CancellationToken ct) => JobStreamApi.WriteAsync(http, null, chunk.ToJsonString(), null, ct);

        public async Task DeltaAsync(string? text, CancellationToken ct)
        {
            await StartAsync(ct);
            if (text is { Length: > 0 })
            {
                await SendAsync(Chunk(chat ? new JsonObject { ["content"] = text } : JsonValue.Create(text), null), ct);
            }
        }

        public async Task EndAsync(Job job, CancellationToken ct)
        {
            await StartAsync(ct);
            if (job.Status != JobStatuses.Succeeded)
            {
                await ErrorAsync(job.Error ?? $"The job ended {job.Status}.", ct);
                return;
            }

            var reason = job.FinishReason is "stop" or "length" ? job.FinishReason : "length";
            await SendAsync(Chunk(null, reason), ct);
            if (includeUsage)
            {
                var usage = new JsonObject
                {
                    ["prompt_tokens"] = job.PromptTokens ?? 0, ["completion_tokens"] = job.CompletionTokens ?? 0,
                    ["total_tokens"] = (job.PromptTokens ?? 0) + (job.CompletionTokens ?? 0),
                    ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = job.CachedTokens ?? 0 },
                };
                var last = Chunk(null, null);
                last["choices"] = new JsonArray();
                last["usage"] = usage;
                await SendAsync(last, ct);
            }

            await JobStreamApi.WriteAsync(http, null, "[DONE]", null, ct);
        }

        public async Task ErrorAsync(string message, CancellationToken ct)
        {
            await StartAsync(ct);
            await SendAsync(new JsonObject { ["error"] = new JsonObject { ["message"] = message, ["type"] = "server_error" } }, ct);
            await JobStreamApi.WriteAsync(http, null, "[DONE]", null, ct);
        }
    }
}
