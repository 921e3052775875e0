using System.Security.Cryptography;
using System.Text;

namespace LlmServing.Contracts;

/// <summary>
/// Event: a job succeeded. Published by the Producer once the result is in PostgreSQL, at least once: a consumer
/// deduplicates on the message id, which is <see cref="ResultEventIds.ForJob"/> of the job (the same on every
/// redelivery). For a batch line, <see cref="BatchId"/> and <see cref="CustomId"/> are set.
/// </summary>
/// <remarks>Wire identity is namespace + type name: never rename or move; add optional properties only.</remarks>
public sealed record JobCompleted
{
    /// <summary>The job.</summary>
    public required Guid JobId { get; init; }
    /// <summary>Owning tenant.</summary>
    public required string TenantId { get; init; }

    /// <summary>Always <c>succeeded</c>.</summary>
    public required string Status { get; init; }

    /// <summary><c>stop</c>, <c>length</c> or <c>time_limit</c>.</summary>
    public string? FinishReason { get; init; }

    /// <summary>The generated text (the first choice).</summary>
    public string? OutputText { get; init; }
    /// <summary>Token counts.</summary>
    public ResultUsage? Usage { get; init; }

    /// <summary>The client's <c>Idempotency-Key</c>, when it gave one.</summary>
    public string? IdempotencyKey { get; init; }

    /// <summary>The batch, for a batch line.</summary>
    public string? BatchId { get; init; }
    /// <summary>The batch line's <c>custom_id</c>.</summary>
    public string? CustomId { get; init; }
    /// <summary>When the final state was written.</summary>
    public DateTimeOffset? FinishedAt { get; init; }
}

/// <summary>
/// Event: a job ended without a result: <see cref="Status"/> is <c>failed</c>, <c>cancelled</c> or <c>expired</c>.
/// Same delivery and deduplication as <see cref="JobCompleted"/>.
/// </summary>
/// <remarks>Wire identity is namespace + type name: never rename or move; add optional properties only.</remarks>
public sealed record JobFailed
{
    /// <summary>The job.</summary>
    public required Guid JobId { get; init; }
    /// <summary>Owning tenant.</summary>
    public required string TenantId { get; init; }
    /// <summary>The final status.</summary>
    public required string Status { get; init; }
    /// <summary>Why it ended without a result.</summary>
    public string? Error { get; init; }
    /// <summary><c>stop</c>, <c>length</c> or <c>time_limit</c>, when generation ran.</summary>
    public string? FinishReason { get; init; }

    /// <summary>What was generated before a cancel, if anything.</summary>
    public string? OutputText { get; init; }

    /// <summary>Token counts.</summary>
    public ResultUsage? Usage { get; init; }
    /// <summary>The client's <c>Idempotency-Key</c>, when it gave one.</summary>
    public string? IdempotencyKey { get; init; }
    /// <summary>The batch, for a batch line.</summary>
    public string? BatchId { get; init; }
    /// <summary>The batch line's <c>custom_id</c>.</summary>
    public string? CustomId { get; init; }
    /// <summary>When the final state was written.</summary>
    public DateTimeOffset? FinishedAt { get; init; }
}

/// <summary>
/// Event: a batch reached its final status: <c>completed</c>, <c>failed</c>, <c>cancelled</c> or <c>expired</c>.
/// At least once; the message id is <see cref="ResultEventIds.ForBatch"/>.
/// </summary>
/// <remarks>Wire identity is namespace + type name: never rename or move; add optional properties only.</remarks>
public sealed record BatchCompleted
{
    /// <summary>The batch, for a batch line.</summary>
    public required string BatchId { get; init; }
    /// <summary>Owning tenant.</summary>
    public required string TenantId { get; init; }
    /// <summary>The final status.</summary>
    public required string Status { get; init; }
    /// <summary>Lines in the batch.</summary>
    public int Total { get; init; }
    /// <summary>Lines that succeeded.</summary>
    public int Completed { get; init; }
    /// <summary>Lines that failed, were cancelled or expired.</summary>
    public int Failed { get; init; }
    /// <summary>Token counts.</summary>
    public ResultUsage? Usage { get; init; }
    /// <summary>The output file (successful lines).</summary>
    public string? OutputFileId { get; init; }
    /// <summary>The error file (failed lines).</summary>
    public string? ErrorFileId { get; init; }
    /// <summary>When the final state was written.</summary>
    public DateTimeOffset? FinishedAt { get; init; }
}

/// <summary>Token counts, as OpenAI reports them.</summary>
public sealed record ResultUsage(int PromptTokens, int CompletionTokens, int TotalTokens, int CachedTokens);

/// <summary>The stable message ids of result events: the same for every copy of one event, different across events.</summary>
public static class ResultEventIds
{
    /// <summary>
    /// The message id of the final event of a job; after an operator replayed it (<paramref name="replays"/> times),
    /// another one per replay, since the replayed run ends with a new outcome.
    /// </summary>
    public static Guid ForJob(Guid jobId, int replays = 0) =>
        Derive(replays == 0 ? $"job-final/{jobId:N}" : $"job-final/{jobId:N}/replay-{replays}");

    /// <summary>The message id of the final event of a batch.</summary>
    public static Guid ForBatch(string batchId) => Derive($"batch-final/{batchId}");

    private static Guid Derive(string name)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes("LlmServing.ResultEvent/" + name), hash);
        hash[6] = (byte)((hash[6] & 0x0F) | 0x80); // version 8 (name-based, custom hash)
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash[..16], bigEndian: true);
    }
}
