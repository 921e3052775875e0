using System.Text.Json;
using System.Text.Json.Nodes;
using Hangfire;
using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Files;
using LlmServing.Producer.Tenants;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Http;

namespace LlmServing.Producer.Batches;

/// <summary>OpenAI-compatible <c>/v1/batches</c>, plus a one-call JSONL upload for clients without the OpenAI SDK.</summary>
public static class BatchesApi
{
    private static readonly string[] Endpoints = [BatchLineParser.ChatEndpoint, BatchLineParser.CompletionsEndpoint];

    public static IEndpointRouteBuilder MapBatchesApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/batches").WithTags("Batches");
        group.MapPost("", CreateAsync)
            .WithSummary("Create a batch")
            .WithDescription("JSON `{input_file_id, endpoint, completion_window: \"24h\", metadata}` as in OpenAI's Batch API; " +
                             "or the JSONL file itself as the body (`Content-Type: application/jsonl`, `?endpoint=` defaults " +
                             "to /v1/chat/completions).")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge);
        group.MapGet("", ListAsync).WithSummary("List batches, newest first (`limit`, `after`)");
        group.MapGet("/{id}", GetAsync).WithSummary("Get a batch with its request counts").ProducesProblem(StatusCodes.Status404NotFound);
        group.MapPost("/{id}/cancel", CancelAsync)
            .WithSummary("Cancel a batch")
            .WithDescription("Queued lines are not run; running lines stop at their next decode step; the batch ends `cancelled` " +
                             "with the output of every line that finished.")
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict);
        return app;
    }

    private static async Task<IResult> CreateAsync(
        HttpRequest http, string? endpoint, BatchStore batches, BatchLineStore lines, FileStore files, IBackgroundJobClient jobs,
        IOptions<ProducerOptions> options, Webhooks.WebhookTargetPolicy webhookPolicy, ResultStore.Webhooks.WebhookStore webhooks,
        [Microsoft.AspNetCore.Mvc.FromQuery(Name = "webhook_url")] string? webhookUrl, IOptions<Retention.RetentionOptions> retention,
        ResultStore.Tenants.TenantSettingsStore settings, CancellationToken ct)
    {
        var o = options.Value;
        int? outputExpiresAfter = null;
        var uploadedHere = false;
        string inputFileId;
        long inputBytes;
        string? metadata = null;
        var mediaType = http.ContentType?.Split(';')[0].Trim().ToLowerInvariant();
        if (mediaType is "application/jsonl" or "application/x-ndjson" or "application/x-jsonlines" or "text/jsonl")
        {
            if (webhookUrl is not null && await Webhooks.WebhooksApi.CheckTargetAsync(webhookUrl, http.HttpContext.Tenant(), webhookPolicy, webhooks, ct) is { } problem)
            {
                return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid webhook_url", problem);
            }

            endpoint ??= BatchLineParser.ChatEndpoint;
            if (!Endpoints.Contains(endpoint))
            {
                return BadEndpoint(endpoint);
            }

            RequestBodies.AllowBody(http, o.MaxFileBytes);
            try
            {
                var uploaded = await files.CreateAsync(http.HttpContext.Tenant(), "upload.jsonl", "batch", http.Body, o.MaxFileBytes, ct);
                inputFileId = uploaded.Id;
                inputBytes = uploaded.Bytes;
                uploadedHere = true;
                await files.SetExpiryAsync([inputFileId], Retention.RetentionOptions.ExpiryOf(uploaded.CreatedAt, retention.Value.BatchFiles), ct);
            }
            catch (Exception e) when (e is FileTooLargeException or BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge })
            {
                return Problems.Of(StatusCodes.Status413PayloadTooLarge, "File too large", $"A batch file has at most {o.MaxFileBytes} bytes.");
            }
        }
        else if (http.HasJsonContentType())
        {
            JsonObject body;
            if (http.ContentLength > MaxJsonBodyBytes)
            {
                return JsonTooLarge();
            }

            try
            {
                var bytes = await RequestBodies.ReadLimitedAsync(http.Body, MaxJsonBodyBytes, ct);
                if (bytes is null)
                {
                    return JsonTooLarge();
                }

                if (TextInput.FirstUnstorable(bytes) is var (field, problem))
                {
                    return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid character", $"'{field}' {problem}");
                }

                body = RequestBodies.ParseObject(bytes) ?? throw new JsonException("The body must be a JSON object.");
            }
            catch (JsonException e)
            {
                return Problems.Of(StatusCodes.Status400BadRequest, "Malformed JSON", $"The body is not a valid batch request: {e.Message}");
            }

            inputFileId = body["input_file_id"]?.GetValueKind() == JsonValueKind.String ? body["input_file_id"]!.GetValue<string>() : "";
            endpoint = body["endpoint"]?.GetValueKind() == JsonValueKind.String ? body["endpoint"]!.GetValue<string>() : null;
            var window = body["completion_window"]?.GetValueKind() == JsonValueKind.String ? body["completion_window"]!.GetValue<string>() : null;
            if (inputFileId.Length == 0)
            {
                return Problems.Of(StatusCodes.Status400BadRequest, "Missing input_file_id", "'input_file_id' (a file uploaded with purpose \"batch\") is required.");
            }

            if (endpoint is null || !Endpoints.Contains(endpoint))
            {
                return BadEndpoint(endpoint);
            }

            if (window != "24h")
            {
                return Problems.Of(StatusCodes.Status400BadRequest, "Invalid completion_window", $"'completion_window' must be \"24h\" (got {(window is null ? "nothing" : $"\"{window}\"")}).");
            }

            if (body["metadata"] is { } meta)
            {
                if (meta is not JsonObject m || m.Count > 16 || m.Any(p => p.Value?.GetValueKind() != JsonValueKind.String))
                {
                    return Problems.Of(StatusCodes.Status400BadRequest, "Invalid metadata", "'metadata' is an object of at most 16 string values.");
                }

                // OpenAI's limits: keys up to 64 characters, values up to 512.
                if (m.Any(p => p.Key.Length > 64 || p.Value!.GetValue<string>().Length > 512))
                {
                    return Problems.Of(StatusCodes.Status400BadRequest, "Invalid metadata", "'metadata' keys have at most 64 characters and values at most 512.");
                }

                if (m.Any(p => TextInput.HasNul(p.Key) || TextInput.HasNul(p.Value!.GetValue<string>())))
                {
                    return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid metadata", "'metadata' " + (m.Select(p => TextInput.Problem(p.Key) ?? TextInput.Problem(p.Value!.GetValue<string>())).First(p => p is not null)));
                }

                metadata = meta.ToJsonString();
            }

            if (body["output_expires_after"] is { } expiry)
            {
                if (expiry is not JsonObject e || e["anchor"]?.GetValueKind() != JsonValueKind.String || e["anchor"]!.GetValue<string>() != "created_at"
                    || e["seconds"]?.GetValueKind() != JsonValueKind.Number || !e["seconds"]!.AsValue().TryGetValue<int>(out var after)
                    || after is < 3600 or > 2_592_000)
                {
                    return Problems.Of(StatusCodes.Status400BadRequest, "Invalid output_expires_after",
                        "'output_expires_after' is {\"anchor\": \"created_at\", \"seconds\": 3600 to 2592000}, as OpenAI's.");
                }

                outputExpiresAfter = after;
            }

            if (body["webhook_url"] is { } hook)
            {
                webhookUrl = hook.GetValueKind() == JsonValueKind.String ? hook.GetValue<string>() : "";
                if (await Webhooks.WebhooksApi.CheckTargetAsync(webhookUrl, http.HttpContext.Tenant(), webhookPolicy, webhooks, ct) is { } problem)
                {
                    return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid webhook_url", problem);
                }
            }

            if (await files.FindAsync(inputFileId, http.HttpContext.Tenant(), ct) is not { Purpose: "batch" } input)
            {
                return Problems.Of(StatusCodes.Status404NotFound, "File not found", $"There is no batch input file with id {inputFileId}.");
            }

            inputBytes = input.Bytes;
        }
        else
        {
            return Problems.Of(StatusCodes.Status415UnsupportedMediaType, "Unsupported content type",
                "Send JSON ({\"input_file_id\", \"endpoint\", \"completion_window\"}) or the JSONL file itself as application/jsonl.");
        }

        if (await QuotaProblemAsync(http.HttpContext.Tenant(), inputBytes, lines, settings, o, ct) is { } overQuota)
        {
            if (uploadedHere)
            {
                await files.DeleteAsync(inputFileId, CancellationToken.None); // the body was the file: nothing refers to it
            }

            return overQuota;
        }

        var batch = await batches.CreateAsync(new Batch
        {
            Id = BatchStore.NewId(),
            TenantId = http.HttpContext.Tenant(),
            Endpoint = endpoint,
            InputFileId = inputFileId,
            Metadata = metadata,
            JobQueue = o.BatchJobQueue,
            WebhookUrl = webhookUrl,
            OutputExpiresAfterSeconds = outputExpiresAfter,
        }, ct);
        // Not in the batch's transaction: if this enqueue is lost, the stalled-ingestion reaper starts the batch.
        BatchIngestion.Enqueue(jobs, o.EffectiveIngestionQueue, batch.Id);
        return TypedResults.Ok(BatchShapes.Batch(batch, await lines.CountsAsync(batch.Id, ct)));
    }

    /// <summary>
    /// The enqueued-token quota (Azure's enqueued-token limit): 429 when the tenant's enqueued batch work plus this
    /// file's estimate (its size / 4) exceeds its limit; null when within it or when there is no limit. Checked, not
    /// reserved: two batches created at the same moment may both pass.
    /// </summary>
    private static async Task<IResult?> QuotaProblemAsync(
        string tenant, long fileBytes, BatchLineStore lines, ResultStore.Tenants.TenantSettingsStore settings, ProducerOptions o,
        CancellationToken ct)
    {
        var limit = (await settings.FindAsync(tenant, ct))?.MaxEnqueuedTokens ?? o.MaxEnqueuedTokensPerTenant;
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

    private static async Task<IResult> GetAsync(string id, BatchStore batches, BatchLineStore lines, HttpContext http, CancellationToken ct) =>
        await batches.FindAsync(id, http.Tenant(), ct) is { } b
            ? TypedResults.Ok(BatchShapes.Batch(b, await lines.CountsAsync(b.Id, ct)))
            : Problems.Of(StatusCodes.Status404NotFound, "Batch not found", $"There is no batch with id {id}.");

    private static async Task<IResult> ListAsync(int? limit, string? after, BatchStore batches, BatchLineStore lines, HttpContext http, CancellationToken ct)
    {
        var take = Math.Clamp(limit ?? 20, 1, 100);
        var page = await batches.ListAsync(http.Tenant(), after, take + 1, ct);
        var data = new JsonArray();
        foreach (var b in page.Take(take))
        {
            data.Add(BatchShapes.Batch(b, await lines.CountsAsync(b.Id, ct)));
        }

        return TypedResults.Ok(new JsonObject
        {
            ["object"] = "list",
            ["data"] = data,
            ["first_id"] = page.FirstOrDefault()?.Id,
            ["last_id"] = page.Take(take).LastOrDefault()?.Id,
            ["has_more"] = page.Count > take,
        });
    }

    /// <summary>
    /// Marks the batch cancelling; queued lines are cancelled at once, running ones asked to stop. The finalizer repeats
    /// this until the batch ends.
    /// </summary>
    internal static async Task CancelLinesAsync(string id, string tenantId, BatchStore batches, BatchLineStore lines, CancellationToken ct)
    {
        if (await batches.MarkCancellingAsync(id, tenantId, ct))
        {
            await lines.StopAsync(id, JobStatuses.Cancelled, ct);
        }
    }

    private static async Task<IResult> CancelAsync(string id, BatchStore batches, BatchLineStore lines, HttpContext http, CancellationToken ct)
    {
        var before = await batches.FindAsync(id, http.Tenant(), ct);
        if (before is null)
        {
            return Problems.Of(StatusCodes.Status404NotFound, "Batch not found", $"There is no batch with id {id}.");
        }

        if (before.Status is not (BatchStatuses.Validating or BatchStatuses.InProgress or BatchStatuses.Cancelling))
        {
            return Problems.Of(StatusCodes.Status409Conflict, "Batch already ended", $"Batch {id} is {before.Status}; only a validating or running batch can be cancelled.");
        }

        await CancelLinesAsync(id, http.Tenant(), batches, lines, ct);

        var batch = await batches.FindAsync(id, http.Tenant(), ct);
        return TypedResults.Ok(BatchShapes.Batch(batch!, await lines.CountsAsync(id, ct)));
    }

    private const int MaxJsonBodyBytes = 64 * 1024;

    private static IResult JsonTooLarge() =>
        Problems.Of(StatusCodes.Status413PayloadTooLarge, "Request too large", $"A batch request has at most {MaxJsonBodyBytes} bytes; send the lines as a file.");

    private static IResult BadEndpoint(string? endpoint) =>
        Problems.Of(StatusCodes.Status400BadRequest, "Invalid endpoint",
            $"'endpoint' must be \"/v1/chat/completions\" or \"/v1/completions\" (got {(endpoint is null ? "nothing" : $"\"{endpoint}\"")}).");
}
