using LLama.Sampling;
using LlmServing.Contracts;

namespace LlmServing.GpuWorker.Inference;

/// <summary>One sampling pipeline per sequence (pipelines keep state), from the request's parameters.</summary>
public static class SamplerFactory
{
    public static ISamplingPipeline Create(GenerationParameters p)
    {
        if (p.Temperature <= 0f && !p.IgnoreEos)
        {
            return new GreedySamplingPipeline();
        }

        // Temperature 0 in this pipeline is greedy too; PreventEOS gives the end-of-generation tokens no chance.
        return new DefaultSamplingPipeline
        {
            PreventEOS = p.IgnoreEos,
            Temperature = p.Temperature,
            TopP = p.TopP,
            TopK = 0,
            MinP = 0f,
            RepeatPenalty = 1f,
            Seed = p.Seed ?? (uint)Random.Shared.Next(),
        };
    }
}
