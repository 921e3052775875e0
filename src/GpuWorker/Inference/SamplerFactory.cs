using LLama.Native;
using LLama.Sampling;
using LlmServing.Contracts;
using LlmServing.Grammar;
using LlamaGrammar = LLama.Sampling.Grammar;

namespace LlmServing.GpuWorker.Inference;

/// <summary>One sampling pipeline per sequence (pipelines keep state), from the request's parameters.</summary>
public static class SamplerFactory
{
    [ThreadStatic]
    private static string? _lastValidGrammar;

    /// <summary>Tokens the penalties look back over (llama.cpp's default <c>repeat_last_n</c>).</summary>
    public const int PenaltyWindow = 64;

    /// <param name="p">The request's parameters.</param>
    /// <param name="grammarBans">Tokens never sampled under a grammar (see <see cref="InvalidUtf8Starts"/>).</param>
    /// <param name="interrupted">
    /// Under a grammar: true once the sequence must stop (cancelled, over its time limit); the grammar's slow path asks
    /// it between chunks of the vocabulary and throws <see cref="SamplingInterruptedException"/>.
    /// </param>
    public static ISamplingPipeline Create(GenerationParameters p, IReadOnlyCollection<int>? grammarBans = null, Func<bool>? interrupted = null)
    {
        if (p.Grammar is { } gbnf)
        {
            // Written by the Producer from a JSON schema or checked there, never unchecked. Sample() feeds the grammar
            // the token it picked; nothing else may (a second accept aborts llama.cpp).
            return new GrammarSamplingPipeline(new LlamaGrammar(gbnf, "root"), interrupted ?? (() => false))
            {
                Temperature = p.Temperature,
                TopP = p.TopP,
                TopK = p.TopK,
                MinP = p.MinP,
                RepeatPenalty = p.RepetitionPenalty,
                FrequencyPenalty = p.FrequencyPenalty,
                PresencePenalty = p.PresencePenalty,
                PenaltyCount = PenaltyWindow,
                LogitBias = Bias(p, grammarBans),
                Seed = p.Seed ?? (uint)Random.Shared.Next(),
            };
        }

        var shaped = p.TopK > 0 || p.MinP > 0f || p.FrequencyPenalty != 0f || p.PresencePenalty != 0f
                     || Math.Abs(p.RepetitionPenalty - 1f) > 1e-6f || p.LogitBias is { Count: > 0 } || p.Grammar is not null;
        if (p.Temperature <= 0f && !p.IgnoreEos && !shaped)
        {
            return new GreedySamplingPipeline();
        }

        // Temperature 0 in this pipeline is greedy too (after bias and penalties); PreventEOS gives the
        // end-of-generation tokens no chance.
        return new DefaultSamplingPipeline
        {
            PreventEOS = p.IgnoreEos,
            Temperature = p.Temperature,
            TopP = p.TopP,
            TopK = p.TopK,
            MinP = p.MinP,
            RepeatPenalty = p.RepetitionPenalty,
            FrequencyPenalty = p.FrequencyPenalty,
            PresencePenalty = p.PresencePenalty,
            PenaltyCount = PenaltyWindow,
            LogitBias = Bias(p, grammarBans),
            Seed = p.Seed ?? (uint)Random.Shared.Next(),
        };
    }

    private static Dictionary<LLamaToken, float> Bias(GenerationParameters p, IReadOnlyCollection<int>? grammarBans)
    {
        var bias = p.LogitBias?.ToDictionary(kv => (LLamaToken)kv.Key, kv => kv.Value) ?? [];
        if (p.Grammar is not null)
        {
            foreach (var token in grammarBans ?? [])
            {
                bias[token] = float.NegativeInfinity;
            }
        }

        return bias;
    }

    /// <summary>
    /// The single-byte tokens that can only start invalid UTF-8: overlong leads (C0, C1, E0, F0) and bytes F5-FF.
    /// llama.cpp's grammar decodes bytes without rejecting overlong forms, so under a grammar such a byte could become
    /// text that is not what the grammar counted (one character becomes two U+FFFD). Banned only under a grammar;
    /// valid text never needs them as single-byte tokens except for rare scripts and emoji written byte by byte.
    /// </summary>
    public static IReadOnlyCollection<int> InvalidUtf8Starts(SafeLlamaModelHandle model, int vocabularySize)
    {
        var banned = new List<int>();
        Span<byte> piece = stackalloc byte[64];
        for (var id = 0; id < vocabularySize; id++)
        {
            var length = model.TokenToSpan(id, piece, 0, false);
            if (length == 1 && piece[0] is 0xC0 or 0xC1 or 0xE0 or 0xF0 or >= 0xF5)
            {
                banned.Add(id);
            }
        }

        return banned;
    }

    /// <summary>
    /// Why the parameters cannot run on this model, before any native call: a biased token id beyond its vocabulary
    /// (llama.cpp would write outside its logit array) or a grammar llama.cpp would not parse (it answers with a null
    /// sampler, which the chain would dereference). Null when they can run. The Producer checks both first; this holds
    /// for messages that came from elsewhere.
    /// </summary>
    public static string? Check(GenerationParameters p, int vocabularySize)
    {
        if (p.Grammar is { } grammar && !ReferenceEquals(grammar, _lastValidGrammar) && grammar != _lastValidGrammar)
        {
            if (Gbnf.Check(grammar) is { } problem)
            {
                return $"The grammar is not valid: {problem}";
            }

            _lastValidGrammar = grammar; // batch lines share one: checked once
        }

        var outside = p.LogitBias?.Keys.Where(id => id >= vocabularySize).Order().ToList();
        return outside is { Count: > 0 }
            ? $"logit_bias names token {outside[0]}, outside this model's vocabulary of {vocabularySize} tokens."
            : null;
    }
}
