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
internal sealed class ActiveSequence : IDisposable, IRunningSequence
{
    private readonly long _started = Stopwatch.GetTimestamp();
    private readonly StreamingTokenDecoder _decoder;
    private readonly StringBuilder _text = new();

    private CachedPrefix? _sharedWith;
    private int _sharedTokens;

    private ActiveSequence(PendingRequest pending, Conversation conversation, ISamplingPipeline sampler, StreamingTokenDecoder decoder, int need)
    {
        Pending = pending;
        Conversation = conversation;
        Sampler = sampler;
        _decoder = decoder;
        Need = need;
    }

    public PendingRequest Pending { get; }

    public GenerationRequest Request => Pending.Request;

    public bool Stopping => Pending.CancelRequested || Pending.IsAbandoned;

    public Conversation Conversation { get; }

    public ISamplingPipeline Sampler { get; }

    /// <summary>
    /// The KV cells the sequence can come to hold: prompt plus <c>max_tokens</c> (for every choice until the first one
    /// is forked into the others; a fork itself needs only its <c>max_tokens</c>).
    /// </summary>
    public int Need { get; private set; }

    /// <summary>Whether this sequence accounts for the prompt's cells (the first choice, then whichever choice outlives it).</summary>
    public bool OwnsPrompt { get; private set; } = true;

    /// <summary>
    /// The prompt's cells stay in use while any choice runs: when the owner ends first, <paramref name="heir"/> takes
    /// over their reservation (and the share of a cached prefix).
    /// </summary>
    public void HandPromptTo(ActiveSequence heir)
    {
        heir.Need += Pending.Tokens!.Length;
        heir.OwnsPrompt = true;
        if (_sharedWith is { } entry)
        {
            heir.Share(entry, _sharedTokens);
        }

        OwnsPrompt = false;
    }

    /// <summary>Which of the request's choices this is (0 for a single one).</summary>
    public int ChoiceIndex { get; private init; }

    /// <summary>Sequence slots it stands for: all of its request's choices until it is forked.</summary>
    public int SlotsHeld => ChoiceIndex == 0 && !Pending.Forked ? Pending.Request.Parameters.N : 1;

    /// <summary>KV cells reserved for it alone: <see cref="Need"/> less the cells it shares with a cached prefix (counted there).</summary>
    public int Reserved => Need - (_sharedWith is null ? 0 : _sharedTokens);

    /// <summary>Prompt tokens it took from the prefix cache instead of prefilling them.</summary>
    public int CachedTokens { get; private set; }

    /// <summary>Its prompt was offered to the prefix cache (once, after its prefill).</summary>
    public bool Offered { get; set; }

    private List<TokenLogprob>? _logprobs;

    /// <summary>The generated tokens' log-probabilities when the request asked for them (empty before any); else null.</summary>
    private IReadOnlyList<TokenLogprob>? TokenLogprobs => Pending.Request.Parameters.Logprobs ? _logprobs ?? [] : null;

    /// <summary>Records the log-probabilities of a sampled token from the logits it was sampled from.</summary>
    public void RecordLogprobs(ReadOnlySpan<float> logits, LLamaToken token, SafeLlamaModelHandle model)
    {
        var p = Pending.Request.Parameters;
        var (chosen, top) = Logprobs.Of(logits, (int)token, p.TopLogprobs);
        var bytes = Bytes(model, token);
        var alternatives = new List<TopLogprob>(top.Count);
        foreach (var (id, logprob) in top)
        {
            var b = Bytes(model, id);
            alternatives.Add(new TopLogprob(Logprobs.Text(b), logprob, b));
        }

        (_logprobs ??= []).Add(new TokenLogprob(Logprobs.Text(bytes), chosen, bytes, alternatives));
    }

    private static byte[] Bytes(SafeLlamaModelHandle model, LLamaToken token)
    {
        Span<byte> buffer = stackalloc byte[256];
        var length = (int)model.TokenToSpan(token, buffer, 0, false);
        return length <= buffer.Length ? buffer[..length].ToArray() : [];
    }

    public int Generated { get; private set; }

    public string Text => _text.ToString();

    /// <summary>Tokens generated when its progress was last reported.</summary>
    public int ReportedTokens { get; set; }

    /// <summary>
    /// The text a stream may show now: all of it but the tail that could still become the start of a stop string
    /// (the final text is cut where a stop string begins), and never half a surrogate pair.
    /// </summary>
    public string StreamableText()
    {
        var stops = Pending.Request.Parameters.Stop;
        var hold = stops.Count > 0 ? stops.Max(s => s.Length) - 1 : 0;
        var length = Math.Max(0, _text.Length - hold);
        if (length > 0 && char.IsHighSurrogate(_text[length - 1]))
        {
            length--;
        }

        return _text.ToString(0, length);
    }

    /// <summary>Starts a sequence for a request whose tokens are rendered: its prompt joins the next decode step.</summary>
    /// <param name="executor">The executor.</param>
    /// <param name="pending">The request, its tokens rendered.</param>
    /// <param name="need">Prompt plus <c>max_tokens</c>.</param>
    /// <param name="cache">The prefix cache, when one is used.</param>
    /// <param name="hit">A cached prefix to start from (and how many of its tokens), or none.</param>
    /// <param name="grammarBans">See <see cref="SamplerFactory.InvalidUtf8Starts"/>.</param>
    public static ActiveSequence Start(
        BatchedExecutor executor, PendingRequest pending, int need, PrefixCache? cache, (CachedPrefix? Entry, int Length) hit,
        IReadOnlyCollection<int> grammarBans)
    {
        var tokens = pending.Tokens!;
        var conversation = hit.Entry is { } entry ? cache!.Start(entry, hit.Length) : executor.Create();
        conversation.Prompt(tokens.AsSpan(hit.Length));
        ActiveSequence? self = null;
        var sampler = SamplerFactory.Create(pending.Request.Parameters, grammarBans, () => self?.MustStop() ?? false);
        var sequence = self = new ActiveSequence(pending, conversation, sampler, new StreamingTokenDecoder(executor.Context), need);
        if (hit.Entry is { } shared)
        {
            sequence.Share(shared, hit.Length);
            sequence.CachedTokens = hit.Length;
        }

        pending.CachedTokens = hit.Length;
        return sequence;
    }

    /// <summary>
    /// The other choices of a prefilled first sequence: forks sharing its prompt cells, each with its own sampler (the
    /// request's seed plus the choice index, so that choices differ and still repeat).
    /// </summary>
    public IEnumerable<ActiveSequence> ForkChoices(IReadOnlyCollection<int> grammarBans)
    {
        var p = Pending.Request.Parameters;
        Pending.Forked = true;
        Need = Pending.Tokens!.Length + p.MaxTokens;
        for (var k = 1; k < p.N; k++)
        {
            var parameters = p.Seed is { } seed ? p with { Seed = unchecked(seed + (uint)k) } : p;
            ActiveSequence? self = null;
            var sampler = SamplerFactory.Create(parameters, grammarBans, () => self?.MustStop() ?? false);
            yield return self = new ActiveSequence(Pending, Conversation.Fork(), sampler,
                new StreamingTokenDecoder(Conversation.Executor.Context), p.MaxTokens)
            {
                ChoiceIndex = k,
                Offered = true, // the prompt is the first choice's, offered to the cache already
                OwnsPrompt = false,
            };
        }
    }

    /// <summary>From now on the first <paramref name="tokens"/> cells of this sequence are held (and counted) by the entry.</summary>
    public void Share(CachedPrefix entry, int tokens)
    {
        Unshare();
        _sharedWith = entry;
        _sharedTokens = tokens;
        entry.Dependents++;
    }

    private void Unshare()
    {
        if (_sharedWith is { } previous)
        {
            previous.Dependents--;
            _sharedWith = null;
        }
    }

    /// <summary>True once the sequence must end: cancelled, abandoned by its consumer or over its time limit.</summary>
    public bool MustStop() => Pending.IsAbandoned || EndBeforeSampling() is not null;

    /// <summary>Why the sequence must end before it samples again (cancelled, over its time limit); null to go on.</summary>
    public string? EndBeforeSampling() =>
        Pending.CancelRequested ? "cancelled"
        : Pending.Request.Parameters.MaxGenerationSeconds is { } limit && Stopwatch.GetElapsedTime(_started).TotalSeconds >= limit ? "time_limit"
        : null;

    /// <summary>
    /// Takes a sampled token (not end-of-generation): appends its text, and returns why the sequence ends (a stop
    /// string, cut off the text; or <c>max_tokens</c>), or null when the token should be fed back for the next step.
    /// </summary>
    /// <summary>When the sequence was admitted.</summary>
    public DateTimeOffset AdmittedAt { get; } = DateTimeOffset.UtcNow;

    /// <summary>When its first token was sampled.</summary>
    public DateTimeOffset? FirstTokenAt { get; private set; }

    public string? Accept(LLamaToken token)
    {
        FirstTokenAt ??= DateTimeOffset.UtcNow;
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

    public GenerationChoice Choice(string finishReason) => new(ChoiceIndex, Text, finishReason, Generated, TokenLogprobs);

    public GenerationOutcome Outcome(string finishReason) =>
        new(Text, finishReason, Pending.Tokens!.Length, Generated)
        {
            CachedTokens = CachedTokens,
            Logprobs = TokenLogprobs,
            AdmittedAt = AdmittedAt,
            FirstTokenAt = FirstTokenAt,
        };

    public void Dispose()
    {
        Unshare();
        Conversation.Dispose();
        Sampler.Dispose();
    }
}
