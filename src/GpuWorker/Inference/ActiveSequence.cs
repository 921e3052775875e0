using System.Diagnostics;
using System.Text;
using LLama;
using LLama.Batched;
using LLama.Native;
using LLama.Sampling;

namespace LlmServing.GpuWorker.Inference;

/// <summary>
/// A request holding a sequence slot: its conversation in the executor (its KV cells), its sampler, the text so far
/// and its KV reservation. One per running request; disposed when it ends, which frees its cells at once.
/// </summary>
internal sealed class ActiveSequence : IDisposable
{
    private readonly long _started = Stopwatch.GetTimestamp();
    private readonly StreamingTokenDecoder _decoder;
    private readonly StringBuilder _text = new();

    private ActiveSequence(PendingRequest pending, Conversation conversation, ISamplingPipeline sampler, StreamingTokenDecoder decoder, int reserved)
    {
        Pending = pending;
        Conversation = conversation;
        Sampler = sampler;
        _decoder = decoder;
        Reserved = reserved;
    }

    public PendingRequest Pending { get; }

    public Conversation Conversation { get; }

    public ISamplingPipeline Sampler { get; }

    /// <summary>KV cells reserved: prompt plus <c>max_tokens</c>.</summary>
    public int Reserved { get; }

    public int Generated { get; private set; }

    public string Text => _text.ToString();

    /// <summary>Starts a sequence for a request whose tokens are rendered: its prompt joins the next decode step.</summary>
    public static ActiveSequence Start(BatchedExecutor executor, PendingRequest pending, int reserved, IReadOnlyCollection<int> grammarBans)
    {
        var conversation = executor.Create();
        conversation.Prompt(pending.Tokens!);
        return new ActiveSequence(pending, conversation, SamplerFactory.Create(pending.Request.Parameters, grammarBans),
            new StreamingTokenDecoder(executor.Context), reserved);
    }

    /// <summary>Why the sequence must end before it samples again (cancelled, over its time limit); null to go on.</summary>
    public string? EndBeforeSampling() =>
        Pending.CancelRequested ? "cancelled"
        : Pending.Request.Parameters.MaxGenerationSeconds is { } limit && Stopwatch.GetElapsedTime(_started).TotalSeconds >= limit ? "time_limit"
        : null;

    /// <summary>
    /// Takes a sampled token (not end-of-generation): appends its text, and returns why the sequence ends (a stop
    /// string, cut off the text; or <c>max_tokens</c>), or null when the token should be fed back for the next step.
    /// </summary>
    public string? Accept(LLamaToken token)
    {
        Generated++;
        _decoder.Add(token);
        var before = _text.Length;
        _text.Append(_decoder.Read());
        var cut = StopMatcher.Find(_text, before, Pending.Request.Parameters.Stop);
        if (cut >= 0)
        {
            _text.Length = cut;
            return "stop";
        }

        return Generated >= Pending.Request.Parameters.MaxTokens ? "length" : null;
    }

    public GenerationOutcome Outcome(string finishReason) => new(Text, finishReason, Pending.Tokens!.Length, Generated);

    public void Dispose()
    {
        Conversation.Dispose();
        Sampler.Dispose();
    }
}
