using System.Diagnostics;
using LLama;
using LLama.Batched;
using LLama.Common;
using LLama.Native;
using LLama.Sampling;

namespace LlmServing.Benchmarks;

/// <summary>
/// The ceiling: raw LLamaSharp <see cref="BatchedExecutor"/> generation with N parallel sequences, the same prompt
/// length and new tokens, no queue and no database.
/// </summary>
public static class EngineBenchmark
{
    public static async Task<double> TokensPerSecondAsync(LLamaWeights model, string modelPath, int sequences, int promptTokens, int newTokens, int threads)
    {
        var parameters = new ModelParams(modelPath)
        {
            ContextSize = (uint)(sequences * (promptTokens + newTokens + 8)),
            BatchSize = 512,
            UBatchSize = 512,
            SeqMax = (uint)sequences,
            KVUnified = true,
            Threads = threads,
            BatchThreads = threads,
        };
        using var executor = new BatchedExecutor(model, parameters);
        var prompt = Workload.PromptTokens(executor.Context, promptTokens);
        var conversations = new List<(Conversation Conversation, DefaultSamplingPipeline Sampler)>();
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < sequences; i++)
        {
            var conversation = executor.Create();
            conversation.Prompt(prompt);
            conversations.Add((conversation, new DefaultSamplingPipeline { Temperature = 0, PreventEOS = true, Seed = (uint)i }));
        }

        var generated = 0;
        var remaining = sequences;
        var counts = new int[sequences];
        while (remaining > 0)
        {
            var result = await executor.Infer();
            if (result != DecodeResult.Ok)
            {
                throw new InvalidOperationException($"llama_decode failed: {result}");
            }

            for (var i = 0; i < sequences; i++)
            {
                var (conversation, sampler) = conversations[i];
                if (counts[i] >= newTokens || !conversation.RequiresSampling)
                {
                    continue;
                }

                var token = conversation.Sample(sampler);
                generated++;
                if (++counts[i] == newTokens)
                {
                    remaining--;
                    conversation.Dispose();
                }
                else
                {
                    conversation.Prompt(token);
                }
            }
        }

        clock.Stop();
        foreach (var (_, sampler) in conversations)
        {
            sampler.Dispose();
        }

        return generated / clock.Elapsed.TotalSeconds;
    }
}

/// <summary>Prompts of a known token length, the same for the engine and the end-to-end runs.</summary>
public static class Workload
{
    private static readonly string[] Words = ["the", "queue", "worker", "batch", "model", "token", "result", "answer"];

    /// <summary>A prompt text that the generated vocabulary tokenizes into about <paramref name="tokens"/> tokens.</summary>
    public static string PromptText(int tokens) =>
        string.Join(' ', Enumerable.Range(0, Math.Max(1, tokens - 1)).Select(i => Words[i % Words.Length]));

    public static LLamaToken[] PromptTokens(LLamaContext context, int tokens) =>
        context.Tokenize(PromptText(tokens), addBos: true, special: false);
}
