using System.Diagnostics;
using LlmServing.Contracts;
using LlmServing.GpuWorker.Inference;

namespace LlmServing.Benchmarks;

/// <summary>Mixed lengths through the worker's own scheduler: continuous batching against static batches.</summary>
public static class MixedBenchmark
{
    public static async Task<(double TokensPerSecond, double Seconds, long Tokens)> RunAsync(
        string modelPath, SchedulingMode mode, int slots, int promptTokens, IReadOnlyList<int> lengths, int threads)
    {
        await using var host = await SchedulerHost.StartAsync(new InferenceOptions
        {
            ModelPath = modelPath,
            ContextSize = slots * (promptTokens + lengths.Max() + 8),
            Slots = slots,
            Threads = threads,
            Scheduling = mode,
        });
        var prompt = Workload.PromptText(promptTokens);
        var clock = Stopwatch.StartNew();
        var outcomes = await Task.WhenAll(lengths.Select(n => host.Scheduler.GenerateAsync(
            new GenerationRequest(Guid.NewGuid(), prompt, null, new GenerationParameters { MaxTokens = n, Temperature = 0, IgnoreEos = true }),
            CancellationToken.None)));
        clock.Stop();
        long tokens = outcomes.Sum(o => o.CompletionTokens);
        return (tokens / clock.Elapsed.TotalSeconds, clock.Elapsed.TotalSeconds, tokens);
    }
}
