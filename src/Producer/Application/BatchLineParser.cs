using System.Text.Json;
using LlmServing.Contracts;

namespace LlmServing.Producer.Application;

/// <summary>One parsed line of a batch file: a job to run, or the reason the line cannot run.</summary>
public sealed record BatchLine(int Number, string? CustomId, GenerateCompletion? Job, string? Error);

/// <summary>
/// Validates batch lines in the OpenAI Batch format: <c>{"custom_id", "method": "POST", "url", "body"}</c>, where the
/// body is a chat or completion request. Each bad line gets its own specific error; the other lines run.
/// </summary>
public sealed class BatchLineParser(string endpoint, string batchId, string tenantId, ProducerOptions options, JsonSerializerOptions json)
{
    public const string ChatEndpoint = "/v1/chat/completions";
    public const string CompletionsEndpoint = "/v1/completions";

    private readonly HashSet<string> _customIds = new(StringComparer.Ordinal);

    /// <summary>custom_ids already taken (when ingestion resumes).</summary>
    public void Seen(IEnumerable<string> customIds) => _customIds.UnionWith(customIds);

    public BatchLine Parse(int number, ReadOnlySpan<byte> line)
    {
        if (line.Length > options.MaxLineBytes)
        {
            return new BatchLine(number, null, null, $"Line {number} has {line.Length} bytes; the limit is {options.MaxLineBytes}.");
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(line.ToArray());
        }
        catch (JsonException e)
        {
            return new BatchLine(number, null, null, $"Line {number} is not valid JSON: {e.Message}");
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return new BatchLine(number, null, null, $"Line {number} is not a JSON object.");
            }

            // Checked before anything of the line is kept: neither the job row nor its custom_id could be stored.
            if (TextInput.HasNul(root))
            {
                return new BatchLine(number, null, null, $"Line {number} " + TextInput.Problem(root));
            }

            var (customId, body, refused) = Envelope(number, root);
            return refused ?? Request(number, customId!, body);
        }
    }

    /// <summary>The line's envelope: a unique <c>custom_id</c>, <c>method: POST</c>, the batch's <c>url</c>, an object <c>body</c>.</summary>
    private (string? CustomId, JsonElement Body, BatchLine? Refused) Envelope(int number, JsonElement root)
    {
        string? customId = root.TryGetProperty("custom_id", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null;
        BatchLine Refuse(string? id, string error) => new(number, id, null, error);
        if (string.IsNullOrEmpty(customId))
        {
            return (null, default, Refuse(null, $"Line {number} has no 'custom_id' (a non-empty string)."));
        }

        if (customId.Length > 512)
        {
            return (null, default, Refuse(null, $"Line {number}: 'custom_id' has more than 512 characters."));
        }

        if (!_customIds.Add(customId))
        {
            return (null, default, Refuse(customId, $"Line {number}: duplicate custom_id '{customId}'; custom_ids must be unique in a batch."));
        }

        var method = root.TryGetProperty("method", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
        if (!string.Equals(method, "POST", StringComparison.OrdinalIgnoreCase))
        {
            return (null, default, Refuse(customId, $"Line {number}: 'method' must be \"POST\" (got {Show(m)})."));
        }

        var url = root.TryGetProperty("url", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
        if (url != endpoint)
        {
            return (null, default, Refuse(customId, $"Line {number}: 'url' must be the batch's endpoint \"{endpoint}\" (got {Show(u)})."));
        }

        return root.TryGetProperty("body", out var body) && body.ValueKind == JsonValueKind.Object
            ? (customId, body, null)
            : (null, default, Refuse(customId, $"Line {number}: 'body' must be a JSON object with the request."));
    }

    /// <summary>The line's request, by the same rules as <c>/v1/jobs</c> plus the batch's own (no queue timeout, no webhook).</summary>
    private BatchLine Request(int number, string customId, JsonElement body)
    {
        BatchLine Refuse(string error) => new(number, customId, null, $"Line {number}: {error}");
        CreateJobRequest request;
        try
        {
            request = body.Deserialize<CreateJobRequest>(json)!;
        }
        catch (JsonException e)
        {
            return Refuse($"the body is not a valid request: {e.Message}");
        }

        var problem = endpoint == ChatEndpoint && request.Messages is null ? $"a {ChatEndpoint} body needs 'messages'."
            : endpoint == CompletionsEndpoint && request.Prompt is null ? $"a {CompletionsEndpoint} body needs 'prompt'."
            // A line waits as long as its batch's completion_window; refused rather than silently ignored.
            : request.QueueTimeoutSeconds is not null ? "'queue_timeout_seconds' is not supported in batch lines; a batch line waits for its batch's completion_window."
            : request.WebhookUrl is not null ? "'webhook_url' is not supported in batch lines; give the batch a webhook_url."
            : null;
        if (problem is not null)
        {
            return Refuse(problem);
        }

        var (parameters, messages, errors) = JobRequestValidator.Validate(request, options);
        if (parameters is null)
        {
            return Refuse(string.Join(" ", errors.SelectMany(e => e.Value.Select(v => $"{e.Key}: {v}"))));
        }

        var model = body.TryGetProperty("model", out var mo) && mo.ValueKind == JsonValueKind.String ? mo.GetString() : null;
        return new BatchLine(number, customId, new GenerateCompletion
        {
            JobId = Guid.CreateVersion7(),
            TenantId = tenantId,
            Prompt = request.Prompt,
            Messages = messages,
            Parameters = parameters,
            BatchId = batchId,
            Model = model,
        }, null);
    }

    private static string Show(JsonElement value) =>
        value.ValueKind == JsonValueKind.Undefined ? "nothing" : value.GetRawText() is { Length: > 60 } raw ? raw[..60] + "…" : value.GetRawText();
}
