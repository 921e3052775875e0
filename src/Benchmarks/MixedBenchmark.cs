using System.Diagnostics;
using LlmServing.Contracts;
using LlmServing.GpuWorker.Inference;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace LlmServing.Benchmarks;

/// <summary>Mixed lengths through the worker's own scheduler: continuous batching against static batches.</summary>
public static class MixedBenchmark
{
    public static async Task<(double TokensPerSecond, double Seconds, long Tokens)> RunAsync(
        string modelPath, SchedulingMode mode, int slots, int promptTokens, IReadOnlyList<int> lengths, int threads)
    {
        var options = Options.Create(new InferenceOptions
        {
            ModelPath = modelPath,
            ContextSize = slots * (promptTokens + lengths.Max() + 8),
            Slots = slots,
            Threads = threads,
            Scheduling = mode,
        });
        using var model = new LlamaModel(options, NullLoggerFactory.Instance, NullLogger<LlamaModel>.Instance);
        await model.StartAsync(CancellationToken.None);
        using var scheduler = new BatchScheduler(model, options, [], NullLogger<BatchScheduler>.Instance);
        await scheduler.StartAsync(CancellationToken.None);
        var prompt = Workload.PromptText(promptTokens);
        var clock = Stopwatch.StartNew();
        var outcomes = await Task.WhenAll(lengths.Select(n => scheduler.GenerateAsync(
            new GenerationRequest(Guid.NewGuid(), prompt, null, new GenerationParameters { MaxTokens = n, Temperature = 0, IgnoreEos = true }),
            CancellationToken.None)));
        clock.Stop();
        await scheduler.StopAsync(CancellationToken.None);
        long tokens = outcomes.Sum(o => o.CompletionTokens);
        return (tokens / clock.Elapsed.TotalSeconds, clock.Elapsed.TotalSeconds, tokens);
    }
}
