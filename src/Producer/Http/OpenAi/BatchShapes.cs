using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.ResultStore.Batches;
using LlmServing.ResultStore.Files;

namespace LlmServing.Producer.Http.OpenAi;

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

    private static long? Unix(DateTimeOffset? t) => t?.ToUnixTimeSeconds();
}
