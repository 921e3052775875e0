namespace LlmServing.Contracts;

/// <summary>
/// Command: run one inference job. Sent by the Producer to <see cref="QueueNames.Jobs"/> after the job row
/// is committed in PostgreSQL; consumed by a GPU worker. The job id is the idempotency key end to end: a
/// redelivered or duplicated message for a job that already reached a final state is acknowledged and ignored.
/// </summary>
/// <remarks>Wire identity is namespace + type name: never rename or move; add optional properties only.</remarks>
public sealed record GenerateCompletion
{
    /// <summary>Job id (the primary key of the job row).</summary>
    public required Guid JobId { get; init; }

    /// <summary>Owning tenant.</summary>
    public required string TenantId { get; init; }

    /// <summary>Plain completion prompt. Exactly one of <see cref="Prompt"/> and <see cref="Messages"/> is set.</summary>
    public string? Prompt { get; init; }

    /// <summary>Chat messages, rendered with the model's chat template (or a plain fallback) by the worker.</summary>
    public IReadOnlyList<ChatMessage>? Messages { get; init; }

    /// <summary>Sampling and stopping parameters.</summary>
    public required GenerationParameters Parameters { get; init; }

    /// <summary>A job not started by this time is not run; it ends <c>expired</c>. Null: no deadline.</summary>
    public DateTimeOffset? Deadline { get; init; }

    /// <summary>Set for a line of a batch: such jobs run only in slots no interactive job is waiting for.</summary>
    public string? BatchId { get; init; }

    /// <summary>The model name the client asked for (echoed in OpenAI-shaped results; the worker's model runs it).</summary>
    public string? Model { get; init; }
}

/// <summary>One chat message.</summary>
/// <param name="Role">One of <c>system</c>, <c>user</c>, <c>assistant</c>.</param>
/// <param name="Content">Message text; treated as data, never parsed for control tokens.</param>
public sealed record ChatMessage(string Role, string Content);

/// <summary>Generation parameters, already validated by the Producer.</summary>
public sealed record GenerationParameters
{
    /// <summary>Maximum new tokens; generation ends with finish reason <c>length</c> when reached.</summary>
    public required int MaxTokens { get; init; }

    /// <summary>Sampling temperature, 0 = greedy.</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>Nucleus sampling threshold in (0, 1].</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Sampler seed; the same seed and parameters give the same output.</summary>
    public uint? Seed { get; init; }

    /// <summary>Stop strings; the output ends before the first occurrence of any of them.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>Never sample end-of-sequence (as vLLM's <c>ignore_eos</c>): fixed-length work for benchmarks.</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>Generation time limit in seconds; the output so far is kept with finish reason <c>time_limit</c>.</summary>
    public int? MaxGenerationSeconds { get; init; }

    /// <summary>Sample only among the k most likely tokens; 0 = off.</summary>
    public int TopK { get; init; }

    /// <summary>Drop tokens less likely than this fraction of the most likely one; 0 = off.</summary>
    public float MinP { get; init; }

    /// <summary>OpenAI's frequency penalty, -2..2; 0 = off.</summary>
    public float FrequencyPenalty { get; init; }

    /// <summary>OpenAI's presence penalty, -2..2; 0 = off.</summary>
    public float PresencePenalty { get; init; }

    /// <summary>llama.cpp's repetition penalty (divides the logits of recent tokens); 1 = off.</summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>Added to the logits of these token ids, -100..100 (-100 bans a token, 100 forces it).</summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }

    /// <summary>
    /// A llama.cpp grammar (GBNF, start rule <c>root</c>) every token must follow: structured output. Written by the
    /// Producer from the request's <c>response_format</c>, never taken from a client as is.
    /// </summary>
    public string? Grammar { get; init; }

    /// <summary>Return the log-probability of each generated token (OpenAI's <c>logprobs</c>).</summary>
    public bool Logprobs { get; init; }

    /// <summary>With <see cref="Logprobs"/>: the most likely alternatives at each position, 0..20.</summary>
    public int TopLogprobs { get; init; }

    /// <summary>Choices to generate from one prefill (OpenAI's <c>n</c>), 1..8; each takes a sequence slot.</summary>
    public int N { get; init; } = 1;
}
