using LlmServing.Contracts;

namespace LlmServing.GpuWorker.Inference;

/// <summary>What the engine is asked to generate. Exactly one of <see cref="Prompt"/> and <see cref="Messages"/> is set.</summary>
public sealed record GenerationRequest(
    Guid JobId,
    string? Prompt,
    IReadOnlyList<ChatMessage>? Messages,
    GenerationParameters Parameters)
{
    /// <summary>Batch lines wait while an interactive request is waiting for a slot.</summary>
    public bool IsBatch { get; init; }

    /// <summary>The worker's own warm-up: not counted in the token and completion counters.</summary>
    public bool IsWarmup { get; init; }
}

/// <summary>The engine's answer. <see cref="Error"/> is set when the job cannot run (e.g. does not fit the context).</summary>
public sealed record GenerationOutcome(
    string Text,
    string? FinishReason,
    int PromptTokens,
    int CompletionTokens,
    string? Error = null)
{
    /// <summary>Prompt tokens taken from the prefix cache instead of being prefilled (OpenAI's <c>cached_tokens</c>).</summary>
    public int CachedTokens { get; init; }

    /// <summary>Each generated token with its log-probability, when the request asked for them.</summary>
    public IReadOnlyList<TokenLogprob>? Logprobs { get; init; }

    /// <summary>Every choice, when the request asked for more than one (<see cref="Text"/> is the first).</summary>
    public IReadOnlyList<GenerationChoice>? Choices { get; init; }

    /// <summary>When the request took a sequence slot (its prefill joined the next decode step).</summary>
    public DateTimeOffset? AdmittedAt { get; init; }

    /// <summary>When its first token was sampled (prefill done).</summary>
    public DateTimeOffset? FirstTokenAt { get; init; }

    public static GenerationOutcome Failed(string error, int promptTokens = 0) => new("", null, promptTokens, 0, error);
}

/// <summary>One of several choices generated from the same prompt.</summary>
public sealed record GenerationChoice(int Index, string Text, string FinishReason, int CompletionTokens, IReadOnlyList<TokenLogprob>? Logprobs);

/// <summary>The worker's inference interface: consumers see this, never a llama.cpp type.</summary>
public interface IGenerator
{
    /// <summary>
    /// Queues a generation and completes when it ends. Cancelling <paramref name="ct"/> drops the sequence at the
    /// next decode step and throws <see cref="OperationCanceledException"/>.
    /// </summary>
    Task<GenerationOutcome> GenerateAsync(GenerationRequest request, CancellationToken ct);

    /// <summary>
    /// A user cancelled the job: a waiting request ends before it starts, a running one stops at its next step, with
    /// finish reason <c>cancelled</c> and the text so far. False when this generator does not hold the job.
    /// </summary>
    bool RequestCancel(Guid jobId) => false;
}

/// <summary>What the worker's housekeeping (idle shutdown, cancellation, metrics) may read of the scheduler.</summary>
public interface ISchedulerState
{
    SchedulerCounters Counters { get; }

    /// <summary>Jobs waiting for or holding a slot.</summary>
    IReadOnlyCollection<Guid> JobIds { get; }

    /// <summary>When the scheduler last held a request (now, while it holds any).</summary>
    DateTimeOffset LastBusyAt { get; }
}

/// <summary>
/// Sees each decode result before the scheduler acts on it. Production registers none; the test harness registers
/// one that turns a step into a failure, to prove the executor rebuild.
/// </summary>
public interface IDecodeResultFilter
{
    LLama.Native.DecodeResult Filter(LLama.Native.DecodeResult result);
}

/// <summary>
/// Runs before each decode step with the sequences it will decode, and may delay the step. Production registers none;
/// tests register a pacer that holds a job in the engine until they have acted on it, or slows every step to a set
/// rate, so that "while it runs" is a fact the test controls rather than a guess at the machine's speed.
/// </summary>
public interface IDecodeStepHook
{
    /// <summary>True to decode now; false to hold the step (the loop admits waiting requests, then asks again).</summary>
    ValueTask<bool> BeforeStepAsync(IReadOnlyList<IRunningSequence> sequences, CancellationToken ct);
}

/// <summary>A sequence in the engine, as a <see cref="IDecodeStepHook"/> sees it (read live, not a snapshot).</summary>
public interface IRunningSequence
{
    GenerationRequest Request { get; }

    /// <summary>Tokens sampled so far.</summary>
    int Generated { get; }

    /// <summary>A cancel was requested, or its consumer gave up on it: it ends at the next step.</summary>
    bool Stopping { get; }
}

/// <summary>Counters of the batch scheduler, for tests, logs and metrics.</summary>
public sealed class SchedulerCounters
{
    private long _decodeSteps;
    private long _tokensGenerated;
    private long _sequencesCompleted;
    private long _decodeFailures;
    private int _activeSequences;
    private int _peakActiveSequences;
    private int _peakReservedTokens;

    /// <summary>Calls to <c>llama_decode</c> (one per step, whatever the number of sequences in it).</summary>
    public long DecodeSteps => Interlocked.Read(ref _decodeSteps);

    public long TokensGenerated => Interlocked.Read(ref _tokensGenerated);

    public long SequencesCompleted => Interlocked.Read(ref _sequencesCompleted);

    public long DecodeFailures => Interlocked.Read(ref _decodeFailures);

    public int ActiveSequences => Volatile.Read(ref _activeSequences);

    /// <summary>Most sequences that were ever in one decode step together.</summary>
    public int PeakActiveSequences => Volatile.Read(ref _peakActiveSequences);

    internal void Step(int active)
    {
        Interlocked.Increment(ref _decodeSteps);
        Volatile.Write(ref _activeSequences, active);
        int peak;
        while (active > (peak = Volatile.Read(ref _peakActiveSequences)))
        {
            Interlocked.CompareExchange(ref _peakActiveSequences, active, peak);
        }
    }

    /// <summary>Most KV cells ever reserved at once (prompts plus max_tokens of the active sequences).</summary>
    public int PeakReservedTokens => Volatile.Read(ref _peakReservedTokens);

    internal void Reserved(int tokens)
    {
        int peak;
        while (tokens > (peak = Volatile.Read(ref _peakReservedTokens)))
        {
            Interlocked.CompareExchange(ref _peakReservedTokens, tokens, peak);
        }
    }

    internal void Token() => Interlocked.Increment(ref _tokensGenerated);

    internal void Completed() => Interlocked.Increment(ref _sequencesCompleted);

    internal void DecodeFailed() => Interlocked.Increment(ref _decodeFailures);

    /// <summary>Requests that started from a cached prefix, and the prompt tokens they did not prefill.</summary>
    public long PrefixHits => Interlocked.Read(ref _prefixHits);

    public long CachedPromptTokens => Interlocked.Read(ref _cachedPromptTokens);

    private long _prefixHits;
    private long _cachedPromptTokens;

    internal void PrefixHit(int tokens)
    {
        Interlocked.Increment(ref _prefixHits);
        Interlocked.Add(ref _cachedPromptTokens, tokens);
    }

    internal void Idle() => Volatile.Write(ref _activeSequences, 0);
}

/// <summary>The text of a running interactive job so far, as a stream may show it (never a prefix of a stop string).</summary>
public sealed record JobProgress(Guid JobId, string Text, int Tokens);

/// <summary>Receives the progress of running interactive jobs from the scheduler loop; must not block it.</summary>
public interface IProgressSink
{
    void Report(IReadOnlyList<JobProgress> progress);
}
