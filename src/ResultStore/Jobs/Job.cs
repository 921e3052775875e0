namespace LlmServing.ResultStore.Jobs;

/// <summary>One inference job: the request, its state and its result. Row of table <c>jobs</c>.</summary>
public sealed class Job
{
    public Guid Id { get; set; }

    public string TenantId { get; set; } = Tenants.Default;

    /// <summary>See <see cref="Contracts.JobStatuses"/>.</summary>
    public string Status { get; set; } = Contracts.JobStatuses.Queued;

    /// <summary>Client-chosen key (header <c>Idempotency-Key</c>), unique per tenant.</summary>
    public string? IdempotencyKey { get; set; }

    /// <summary>SHA-256 of the request body, to reject a reused idempotency key with a different request.</summary>
    public string? RequestHash { get; set; }

    /// <summary>The <see cref="Contracts.GenerateCompletion"/> message as JSON (jsonb).</summary>
    public string Request { get; set; } = "{}";

    public string? OutputText { get; set; }

    /// <summary><c>stop</c> (EOS or a stop string), <c>length</c> (max_tokens), or null while not finished.</summary>
    public string? FinishReason { get; set; }

    public int? PromptTokens { get; set; }

    public int? CompletionTokens { get; set; }

    /// <summary>Prompt tokens the worker took from its prefix cache instead of prefilling them (OpenAI's <c>cached_tokens</c>).</summary>
    public int? CachedTokens { get; set; }

    /// <summary>OpenAI's <c>logprobs</c> object (jsonb), when the request asked for log-probabilities.</summary>
    public string? Logprobs { get; set; }

    /// <summary>Every choice (jsonb: index, text, finish_reason, completion_tokens, logprobs), when more than one was asked for.</summary>
    public string? Choices { get; set; }

    /// <summary>Row committed (the moment the API accepted the job).</summary>
    public DateTimeOffset CreatedAt { get; set; }

    /// <summary>Message handed to the broker; null while the broker has not confirmed it (the sweep retries).</summary>
    public DateTimeOffset? QueuedAt { get; set; }

    /// <summary>Last time a worker claimed the job.</summary>
    public DateTimeOffset? StartedAt { get; set; }

    public DateTimeOffset? FinishedAt { get; set; }

    public string? Error { get; set; }

    /// <summary>How many times a worker claimed the job (more than 1 after a redelivery).</summary>
    public int Attempts { get; set; }

    /// <summary>The worker that last claimed the job.</summary>
    public string? WorkerId { get; set; }

    /// <summary>A job still queued at this time is not run (status <c>expired</c>).</summary>
    public DateTimeOffset? Deadline { get; set; }

    /// <summary>Set when a user asked to cancel a running job; its worker drops it at the next decode step.</summary>
    public DateTimeOffset? CancelRequestedAt { get; set; }

    /// <summary>The batch this job is a line of; null for interactive jobs.</summary>
    public string? BatchId { get; set; }

    /// <summary>The line's <c>custom_id</c> (batch jobs).</summary>
    public string? CustomId { get; set; }

    /// <summary>1-based line number in the batch's input file.</summary>
    public int? LineNumber { get; set; }

    /// <summary>
    /// The queue the job's message is sent to. Sweeps and the reaper republish only their own deployment's jobs, and
    /// to this queue; null on rows written before it was recorded.
    /// </summary>
    public string? Queue { get; set; }

    /// <summary>
    /// While <c>running</c>: until when the claiming worker vouches for the job. Set at the claim and renewed by the
    /// worker while it holds the job; once it lapses, the worker is gone or lost the job, and the reaper requeues it.
    /// </summary>
    public DateTimeOffset? LeaseExpiresAt { get; set; }

    /// <summary>
    /// When the final state's event (<c>JobCompleted</c>/<c>JobFailed</c>) was handed to the broker; null while it is
    /// owed. Whoever wrote the final state, the Producer's event dispatcher sends what is owed (ADR 0006).
    /// </summary>
    public DateTimeOffset? EventSentAt { get; set; }

    /// <summary>Where to deliver this job's final state as a signed webhook; null: the tenant's default, if any.</summary>
    public string? WebhookUrl { get; set; }

    /// <summary>While running (interactive jobs): the text so far that a stream may show, written by the worker every ~100 ms.</summary>
    public string? PartialText { get; set; }

    /// <summary>Tokens generated when <see cref="PartialText"/> was written.</summary>
    public int? PartialTokens { get; set; }

    /// <summary>Batch lines: prompt characters / 4 + max_tokens, the line's weight against its tenant's enqueued-token quota.</summary>
    public int? EstimatedTokens { get; set; }

    /// <summary>
    /// Times an operator replayed the job from a dead letter (the console). Each replay owes a new final event, with a
    /// message id of its own (<see cref="Contracts.ResultEventIds.ForJob"/>), so subscribers that deduplicate still see it.
    /// </summary>
    public int Replays { get; set; }
}

/// <summary>Tenants until API keys exist: every job belongs to the default tenant.</summary>
public static class Tenants
{
    public const string Default = "default";
}
