namespace LlmServing.Contracts;

/// <summary>
/// Queue names shared by the Producer (which declares them at start-up so that messages wait even when no
/// worker has ever run), the workers (which consume them) and the infra manifests (which scale on them).
/// </summary>
public static class QueueNames
{
    /// <summary>The durable queue of <see cref="GenerateCompletion"/> commands.</summary>
    public const string Jobs = "llm-jobs";
}
