using System.Text.Json;
using System.Text.Json.Nodes;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http.OpenAi;

/// <summary>
/// Reads OpenAI's JSON batch request (<c>input_file_id</c>, <c>endpoint</c>, <c>completion_window</c>,
/// <c>metadata</c>, <c>output_expires_after</c>, and our <c>webhook_url</c>) into a <see cref="BatchDraft"/>, or the
/// problem that refuses it. The input file and the webhook target are checked by the caller, against the stores.
/// </summary>
internal static class BatchRequestReader
{
    private const int MaxJsonBodyBytes = 64 * 1024;

    public static async Task<(BatchDraft? Draft, IResult? Problem)> ReadAsync(HttpRequest http, string tenant, CancellationToken ct)
    {
        var (body, problem) = await ReadObjectAsync(http, ct);
        if (problem is not null)
        {
            return (null, problem);
        }

        var inputFileId = Text(body!, "input_file_id") ?? "";
        var endpoint = Text(body!, "endpoint");
        var window = Text(body!, "completion_window");
        if (inputFileId.Length == 0)
        {
            return (null, Problems.Of(StatusCodes.Status400BadRequest, "Missing input_file_id", "'input_file_id' (a file uploaded with purpose \"batch\") is required."));
        }

        if (endpoint is null || !BatchesApi.Endpoints.Contains(endpoint))
        {
            return (null, BatchesApi.BadEndpoint(endpoint));
        }

        if (window != "24h")
        {
            return (null, Problems.Of(StatusCodes.Status400BadRequest, "Invalid completion_window", $"'completion_window' must be \"24h\" (got {(window is null ? "nothing" : $"\"{window}\"")})."));
        }

        var (metadata, badMetadata) = Metadata(body!["metadata"]);
        var (expiresAfter, badExpiry) = OutputExpiry(body!["output_expires_after"]);
        if ((badMetadata ?? badExpiry) is { } invalid)
        {
            return (null, invalid);
        }

        var webhookUrl = body!["webhook_url"] is { } hook ? (hook.GetValueKind() == JsonValueKind.String ? hook.GetValue<string>() : "") : null;
        return (new BatchDraft(tenant, inputFileId, endpoint)
        {
            Metadata = metadata, OutputExpiresAfterSeconds = expiresAfter, WebhookUrl = webhookUrl,
        }, null);
    }

    /// <summary>The body as a JSON object, read with a cap; refused when too large, malformed or holding text that cannot be stored.</summary>
    private static async Task<(JsonObject? Body, IResult? Problem)> ReadObjectAsync(HttpRequest http, CancellationToken ct)
    {
        var tooLarge = Problems.Of(StatusCodes.Status413PayloadTooLarge, "Request too large", $"A batch request has at most {MaxJsonBodyBytes} bytes; send the lines as a file.");
        if (http.ContentLength > MaxJsonBodyBytes)
        {
            return (null, tooLarge);
        }

        try
        {
            var bytes = await RequestBodies.ReadLimitedAsync(http.Body, MaxJsonBodyBytes, ct);
            if (bytes is null)
            {
                return (null, tooLarge);
            }

            if (TextInput.FirstUnstorable(bytes) is var (field, problem))
            {
                return (null, Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid character", $"'{field}' {problem}"));
            }

            return (RequestBodies.ParseObject(bytes) ?? throw new JsonException("The body must be a JSON object."), null);
        }
        catch (JsonException e)
        {
            return (null, Problems.Of(StatusCodes.Status400BadRequest, "Malformed JSON", $"The body is not a valid batch request: {e.Message}"));
        }
    }

    private static string? Text(JsonObject body, string name) =>
        body[name]?.GetValueKind() == JsonValueKind.String ? body[name]!.GetValue<string>() : null;

    /// <summary>OpenAI's metadata: at most 16 string values, keys up to 64 characters, values up to 512.</summary>
    private static (string? Json, IResult? Problem) Metadata(JsonNode? meta)
    {
        if (meta is null)
        {
            return (null, null);
        }

        if (meta is not JsonObject m || m.Count > 16 || m.Any(p => p.Value?.GetValueKind() != JsonValueKind.String))
        {
            return (null, Problems.Of(StatusCodes.Status400BadRequest, "Invalid metadata", "'metadata' is an object of at most 16 string values."));
        }

        if (m.Any(p => p.Key.Length > 64 || p.Value!.GetValue<string>().Length > 512))
        {
            return (null, Problems.Of(StatusCodes.Status400BadRequest, "Invalid metadata", "'metadata' keys have at most 64 characters and values at most 512."));
        }

        var unstorable = m.Select(p => TextInput.Problem(p.Key) ?? TextInput.Problem(p.Value!.GetValue<string>())).FirstOrDefault(p => p is not null);
        return unstorable is not null
            ? (null, Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid metadata", "'metadata' " + unstorable))
            : (meta.ToJsonString(), null);
    }

    /// <summary>OpenAI's <c>output_expires_after</c>: <c>{"anchor": "created_at", "seconds": 3600 to 2592000}</c>.</summary>
    private static (int? Seconds, IResult? Problem) OutputExpiry(JsonNode? expiry)
    {
        if (expiry is null)
        {
            return (null, null);
        }

        if (expiry is not JsonObject e || e["anchor"]?.GetValueKind() != JsonValueKind.String || e["anchor"]!.GetValue<string>() != "created_at"
            || e["seconds"]?.GetValueKind() != JsonValueKind.Number || !e["seconds"]!.AsValue().TryGetValue<int>(out var after)
            || after is < 3600 or > 2_592_000)
        {
            return (null, Problems.Of(StatusCodes.Status400BadRequest, "Invalid output_expires_after",
                "'output_expires_after' is {\"anchor\": \"created_at\", \"seconds\": 3600 to 2592000}, as OpenAI's."));
        }

        return (after, null);
    }
}
