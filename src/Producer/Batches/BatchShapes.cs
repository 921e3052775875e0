using System.Text.Json;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Files;

namespace LlmServing.Producer.Batches;

/// <summary>The OpenAI JSON shapes: file and batch objects, output and error lines.</summary>
public static class BatchShapes
{
    public static JsonObject File(StoredFile f) => new()
    {
        ["expires_at"] = Unix(f.ExpiresAt),
        ["id"] = f.Id,
        ["object"] = "file",
        ["bytes"] = f.Bytes,
        ["created_at"] = f.CreatedAt.ToUnixTimeSeconds(),
        ["filename"] = f.Filename,
        ["purpose"] = f.Purpose,
        ["status"] = "processed",
        ["status_details"] = null,
    };

    public static JsonObject Batch(Batch b, BatchCounts counts) => new()
    {
        ["id"] = b.Id,
        ["object"] = "batch",
        ["endpoint"] = b.Endpoint,
        ["errors"] = b.Errors is null ? null : new JsonObject { ["object"] = "list", ["data"] = JsonNode.Parse(b.Errors) },
        ["input_file_id"] = b.InputFileId,
        ["completion_window"] = b.CompletionWindow,
        ["status"] = b.Status,
        ["output_file_id"] = b.OutputFileId,
        ["error_file_id"] = b.ErrorFileId,
        ["created_at"] = b.CreatedAt.ToUnixTimeSeconds(),
        ["in_progress_at"] = Unix(b.InProgressAt),
        ["expires_at"] = b.ExpiresAt.ToUnixTimeSeconds(),
        ["finalizing_at"] = Unix(b.FinalizingAt),
        ["completed_at"] = Unix(b.CompletedAt),
        ["failed_at"] = Unix(b.FailedAt),
        ["expired_at"] = Unix(b.ExpiredAt),
        ["cancelling_at"] = Unix(b.CancellingAt),
        ["cancelled_at"] = Unix(b.CancelledAt),
        ["request_counts"] = new JsonObject { ["total"] = counts.Total, ["completed"] = counts.Completed, ["failed"] = counts.Failed },
        ["usage"] = new JsonObject
        {
            ["input_tokens"] = counts.PromptTokens,
            ["input_tokens_details"] = new JsonObject { ["cached_tokens"] = counts.CachedTokens },
            ["output_tokens"] = counts.CompletionTokens,
            ["output_tokens_details"] = new JsonObject { ["reasoning_tokens"] = 0 },
            ["total_tokens"] = counts.PromptTokens + counts.CompletionTokens,
        },
        ["webhook_url"] = b.WebhookUrl,
        ["output_expires_after"] = b.OutputExpiresAfterSeconds is { } seconds
            ? new JsonObject { ["anchor"] = "created_at", ["seconds"] = seconds }
            : null,
        ["metadata"] = b.Metadata is null ? null : JsonNode.Parse(b.Metadata),
    };

    /// <summary>An output-file line for a succeeded job.</summary>
    public static void WriteOutputLine(Utf8JsonWriter w, BatchResultRow row, string endpoint)
    {
        var chat = endpoint == BatchLineParser.ChatEndpoint;
        w.WriteStartObject();
        w.WriteString("id", $"batch_req_{row.JobId:N}");
        w.WriteString("custom_id", row.CustomId);
        w.WriteStartObject("response");
        w.WriteNumber("status_code", 200);
        w.WriteString("request_id", row.JobId.ToString());
        w.WritePropertyName("body");
        WriteCompletion(w, row, chat);
        w.WriteEndObject();
        w.WriteNull("error");
        w.WriteEndObject();
    }

    /// <summary>
    /// OpenAI's <c>chat.completion</c> (or <c>text_completion</c>) object for a succeeded job: the body of a batch output
    /// line and the answer of <c>/v1/chat/completions</c> and <c>/v1/completions</c>.
    /// </summary>
    public static void WriteCompletion(Utf8JsonWriter w, BatchResultRow row, bool chat)
    {
        var created = (row.FinishedAt ?? DateTimeOffset.UtcNow).ToUnixTimeSeconds();
        w.WriteStartObject();
        w.WriteString("id", (chat ? "chatcmpl-" : "cmpl-") + row.JobId.ToString("N"));
        w.WriteString("object", chat ? "chat.completion" : "text_completion");
        w.WriteNumber("created", created);
        w.WriteString("model", row.Model ?? "llmserving");
        w.WriteStartArray("choices");
        if (row.Choices is { } all)
        {
            // Several choices from one prompt (n > 1), stored as [{index, text, finish_reason, completion_tokens, logprobs}].
            using var choices = JsonDocument.Parse(all);
            foreach (var c in choices.RootElement.EnumerateArray())
            {
                var logprobs = c.TryGetProperty("logprobs", out var l) && l.ValueKind == JsonValueKind.Object ? l.GetRawText() : null;
                WriteChoice(w, chat, c.GetProperty("index").GetInt32(), c.GetProperty("text").GetString(), logprobs, c.GetProperty("finish_reason").GetString());
            }
        }
        else
        {
            WriteChoice(w, chat, 0, row.OutputText, row.Logprobs, row.FinishReason);
        }

        w.WriteEndArray();
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", row.PromptTokens ?? 0);
        w.WriteNumber("completion_tokens", row.CompletionTokens ?? 0);
        w.WriteNumber("total_tokens", (row.PromptTokens ?? 0) + (row.CompletionTokens ?? 0));
        w.WriteStartObject("prompt_tokens_details");
        w.WriteNumber("cached_tokens", row.CachedTokens ?? 0);
        w.WriteEndObject();
        w.WriteEndObject();
        w.WriteEndObject();
    }

    private static void WriteChoice(Utf8JsonWriter w, bool chat, int index, string? text, string? logprobs, string? finishReason)
    {
        w.WriteStartObject();
        w.WriteNumber("index", index);
        if (chat)
        {
            w.WriteStartObject("message");
            w.WriteString("role", "assistant");
            w.WriteString("content", text);
            w.WriteNull("refusal");
            w.WriteEndObject();
        }
        else
        {
            w.WriteString("text", text);
        }

        if (logprobs is not null)
        {
            w.WritePropertyName("logprobs");
            w.WriteRawValue(logprobs, skipInputValidation: true);
        }
        else
        {
            w.WriteNull("logprobs");
        }

        w.WriteString("finish_reason", finishReason == "time_limit" ? "length" : finishReason);
        w.WriteEndObject();
    }

    /// <summary>An error-file line: a line that failed validation, failed to run, or was cancelled or expired.</summary>
    public static void WriteErrorLine(Utf8JsonWriter w, BatchResultRow row)
    {
        var (code, message) = row.Status switch
        {
            JobStatuses.Cancelled => ("batch_cancelled", "The batch was cancelled before this request finished."),
            JobStatuses.Expired => ("batch_expired", "The batch expired before this request was run."),
            _ when row.Error?.StartsWith("Line ", StringComparison.Ordinal) == true => ("invalid_request", row.Error),
            _ => ("server_error", row.Error ?? "The request failed."),
        };
        w.WriteStartObject();
        w.WriteString("id", $"batch_req_{row.JobId:N}");
        w.WriteString("custom_id", row.CustomId);
        if (code == "invalid_request")
        {
            w.WriteNull("response");
        }
        else
        {
            w.WriteStartObject("response");
            w.WriteNumber("status_code", code == "server_error" ? 500 : 400);
            w.WriteString("request_id", row.JobId.ToString());
            w.WriteStartObject("body");
            w.WriteStartObject("error");
            w.WriteString("message", message);
            w.WriteString("type", code);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndObject();
        }

        w.WriteStartObject("error");
        w.WriteString("code", code);
        w.WriteString("message", message);
        w.WriteNumber("line", row.LineNumber);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    private static long? Unix(DateTimeOffset? t) => t?.ToUnixTimeSeconds();
}
