using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;

namespace LlmServing.Producer.Application;

/// <summary>
/// The lines of a batch's output and error files, in OpenAI's batch output shape. The synchronous endpoints answer
/// with the same completion body, so a line and a direct call agree.
/// </summary>
public static class BatchOutputLines
{
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
}
