using System.Text.Json;
using System.Text.Json.Nodes;
using Hangfire;
using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Files;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http.OpenAi;

/// <summary>OpenAI-compatible <c>/v1/batches</c>, plus a one-call JSONL upload for clients without the OpenAI SDK.</summary>
public static class BatchesApi
{
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
        HttpRequest http, string? endpoint, CreateBatch create, FileStore files, WebhookTargetPolicy webhookPolicy,
        ResultStore.Webhooks.WebhookStore webhooks, [Microsoft.AspNetCore.Mvc.FromQuery(Name = "webhook_url")] string? webhookUrl,
        IOptions<ProducerOptions> options, CancellationToken ct)
    {
        var tenant = http.HttpContext.Tenant();
        var mediaType = http.ContentType?.Split(';')[0].Trim().ToLowerInvariant();
        if (mediaType is "application/jsonl" or "application/x-ndjson" or "application/x-jsonlines" or "text/jsonl")
        {
            return await CreateFromBodyAsync(http, tenant, endpoint, webhookUrl, create, webhookPolicy, webhooks, options.Value, ct);
        }

        if (!http.HasJsonContentType())
        {
            return Problems.Of(StatusCodes.Status415UnsupportedMediaType, "Unsupported content type",
                "Send JSON ({\"input_file_id\", \"endpoint\", \"completion_window\"}) or the JSONL file itself as application/jsonl.");
        }

        var (draft, problem) = await BatchRequestReader.ReadAsync(http, tenant, ct);
        if (problem is not null)
        {
            return problem;
        }

        // A webhook_url in the query string counts too (as for an uploaded file) when the body names none.
        draft = draft! with { WebhookUrl = draft.WebhookUrl ?? webhookUrl };
        if (draft.WebhookUrl is { } url && await WebhookTargets.CheckTargetAsync(url, tenant, webhookPolicy, webhooks, ct) is { } refused)
        {
            return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid webhook_url", refused);
        }

        if (await files.FindAsync(draft.InputFileId, tenant, ct) is not { Purpose: "batch" } input)
        {
            return Problems.Of(StatusCodes.Status404NotFound, "File not found", $"There is no batch input file with id {draft.InputFileId}.");
        }

        return Answer(await create.StartAsync(draft with { InputBytes = input.Bytes }, ct));
    }

    private static IResult Answer((Batch? Batch, BatchCounts? Counts, IResult? Problem) started) =>
        started.Problem ?? TypedResults.Ok(BatchShapes.Batch(started.Batch!, started.Counts!));

    /// <summary>The body is the JSONL file itself: stored as a batch input file, then the batch starts from it.</summary>
    private static async Task<IResult> CreateFromBodyAsync(
        HttpRequest http, string tenant, string? endpoint, string? webhookUrl, CreateBatch create, WebhookTargetPolicy webhookPolicy,
        ResultStore.Webhooks.WebhookStore webhooks, ProducerOptions o, CancellationToken ct)
    {
        if (webhookUrl is not null && await WebhookTargets.CheckTargetAsync(webhookUrl, tenant, webhookPolicy, webhooks, ct) is { } problem)
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
            var (fileId, bytes) = await create.UploadAsync(tenant, http.Body, ct);
            return Answer(await create.StartAsync(new BatchDraft(tenant, fileId, endpoint) { InputBytes = bytes, WebhookUrl = webhookUrl, UploadedHere = true }, ct));
        }
        catch (Exception e) when (e is FileTooLargeException or BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge })
        {
            return Problems.Of(StatusCodes.Status413PayloadTooLarge, "File too large", $"A batch file has at most {o.MaxFileBytes} bytes.");
        }
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

    private static async Task<IResult> CancelAsync(string id, CancelBatch cancel, BatchLineStore lines, HttpContext http, CancellationToken ct)
    {
        var (before, after) = await cancel.RunAsync(id, http.Tenant(), ct);
        if (before is null)
        {
            return Problems.Of(StatusCodes.Status404NotFound, "Batch not found", $"There is no batch with id {id}.");
        }

        if (after is null)
        {
            return Problems.Of(StatusCodes.Status409Conflict, "Batch already ended", $"Batch {id} is {before.Status}; only a validating or running batch can be cancelled.");
        }

        return TypedResults.Ok(BatchShapes.Batch(after, await lines.CountsAsync(id, ct)));
    }

    internal static readonly string[] Endpoints = [BatchLineParser.ChatEndpoint, BatchLineParser.CompletionsEndpoint];

    internal static IResult BadEndpoint(string? endpoint) =>
        Problems.Of(StatusCodes.Status400BadRequest, "Invalid endpoint",
            $"'endpoint' must be \"/v1/chat/completions\" or \"/v1/completions\" (got {(endpoint is null ? "nothing" : $"\"{endpoint}\"")}).");
}
