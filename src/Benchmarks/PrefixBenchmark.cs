using System.Diagnostics;
using LlmServing.Contracts;
using LlmServing.GpuWorker.Inference;

namespace LlmServing.Benchmarks;

/// <summary>
/// Shared-prefix workload through the worker's own scheduler: every job is one long shared instruction plus a short
/// unique part, generating a few tokens (classification-style). Jobs/s with prefix reuse on and off, same settings.
/// </summary>
public static class PrefixBenchmark
{
    public static async Task<(double On, double Off, double CachedShare)> RunAsync(
        string modelPath, int slots, int sharedTokens, int jobsOn, int jobsOff, int newTokens, int threads)
    {
        var instruction = Workload.PromptText(sharedTokens);
        var prompts = Enumerable.Range(0, Math.Max(jobsOn, jobsOff))
            .Select(i => $"{instruction} ticket {i} the customer {i * 7 % 13} reports that the batch {i % 5} is late and wants an answer")
            .ToList();
        var (on, cachedShare) = await RunOnceAsync(modelPath, slots, sharedTokens, prompts.Take(jobsOn).ToList(), newTokens, threads, reuse: true);
        var (off, _) = await RunOnceAsync(modelPath, slots, sharedTokens, prompts.Take(jobsOff).ToList(), newTokens, threads, reuse: false);
        return (on, off, cachedShare);
    }

    private static async Task<(double JobsPerSecond, double CachedShare)> RunOnceAsync(
        string modelPath, int slots, int sharedTokens, List<string> prompts, int newTokens, int threads, bool reuse)
    {
        await using var host = await SchedulerHost.StartAsync(new InferenceOptions
        {
            ModelPath = modelPath,
            ContextSize = slots * (sharedTokens + 64 + newTokens) + sharedTokens + 64,
            Slots = slots,
            Threads = threads,
            MaxCachedPrefixes = reuse ? 4 : 0,
        });
        var clock = Stopwatch.StartNew();
        var outcomes = await Task.WhenAll(prompts.Select(p => host.Scheduler.GenerateAsync(
            new GenerationRequest(Guid.NewGuid(), p, null, new GenerationParameters { MaxTokens = newTokens, Temperature = 0, IgnoreEos = true }),
            CancellationToken.None)));
        clock.Stop();
        var prompt = outcomes.Sum(o => (double)o.PromptTokens);
        return (prompts.Count / clock.Elapsed.TotalSeconds, outcomes.Sum(o => (double)o.CachedTokens) / prompt);
    }
}
