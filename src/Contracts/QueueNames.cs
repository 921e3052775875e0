namespace LlmServing.Contracts;

/// <summary>
/// Queue names shared by the Producer (which declares them at start-up so that messages wait even when no
/// worker has ever run), the workers (which consume them) and the infra manifests (which scale on them).
/// </summary>
public static class QueueNames
{
    /// <summary>The durable queue of <see cref="GenerateCompletion"/> commands.</summary>
    public const string Jobs = "llm-jobs";

    /// <summary>
    /// The durable queue of batch lines. A separate queue (not a priority on one queue) so that batch lines never sit
    /// in front of interactive jobs in the broker, each can be sized and scaled on its own, and a worker's scheduler
    /// can always prefer interactive work when a slot frees.
    /// </summary>
    public const string BatchJobs = "llm-batch-jobs";
}
