using LLama.Native;
using LLama.Sampling;
using LlmServing.Contracts;

namespace LlmServing.GpuWorker.Inference;

/// <summary>One sampling pipeline per sequence (pipelines keep state), from the request's parameters.</summary>
public static class SamplerFactory
{
    /// <summary>Tokens the penalties look back over (llama.cpp's default <c>repeat_last_n</c>).</summary>
    public const int PenaltyWindow = 64;

    public static ISamplingPipeline Create(GenerationParameters p)
    {
        var shaped = p.TopK > 0 || p.MinP > 0f || p.FrequencyPenalty != 0f || p.PresencePenalty != 0f
                     || Math.Abs(p.RepetitionPenalty - 1f) > 1e-6f || p.LogitBias is { Count: > 0 };
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
            LogitBias = p.LogitBias?.ToDictionary(kv => (LLamaToken)kv.Key, kv => kv.Value) ?? new Dictionary<LLamaToken, float>(),
            Seed = p.Seed ?? (uint)Random.Shared.Next(),
        };
    }

    /// <summary>Why the parameters cannot run on a model with this vocabulary (a biased token id beyond it); null when they can.</summary>
    public static string? CheckVocabulary(GenerationParameters p, int vocabularySize)
    {
        var outside = p.LogitBias?.Keys.Where(id => id >= vocabularySize).Order().ToList();
        return outside is { Count: > 0 }
            ? $"logit_bias names token {outside[0]}, outside this model's vocabulary of {vocabularySize} tokens."
            : null;
    }
}
