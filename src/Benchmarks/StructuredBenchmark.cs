using System.Diagnostics;
using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.GpuWorker.Inference;
using LlmServing.Grammar;

namespace LlmServing.Benchmarks;

/// <summary>
/// Structured output against free sampling through the worker's own scheduler, same model, slots and seeds: tokens/s
/// of sampling under the grammar of a bounded JSON schema, against tokens/s of the same requests without it.
/// </summary>
public static class StructuredBenchmark
{
    public const string Schema = """
        {"type": "object", "properties": {
           "category": {"enum": ["billing", "bug", "feature"]}, "priority": {"type": "integer"}, "urgent": {"type": "boolean"},
           "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
           "customer": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "tier": {"enum": ["gold", "silver", null]}},
                        "required": ["name", "tier"]}},
         "required": ["category", "priority", "urgent", "tags", "customer"]}
        """;

    public static async Task<(double Free, double Constrained, double ConstrainedTokensPerJob)> RunAsync(
        string modelPath, int slots, int promptTokens, int jobs, int threads)
    {
        await using var host = await SchedulerHost.StartAsync(new InferenceOptions
        {
            ModelPath = modelPath,
            ContextSize = slots * (promptTokens + 256 + 8),
            Slots = slots,
            Threads = threads,
        });
        var prompt = Workload.PromptText(promptTokens);
        var grammar = JsonGrammar.ForSchema(JsonDocument.Parse(Schema).RootElement);

        async Task<(double TokensPerSecond, double TokensPerJob)> Run(string? gbnf, int? fixedLength)
        {
            var clock = Stopwatch.StartNew();
            var outcomes = await Task.WhenAll(Enumerable.Range(0, jobs).Select(i => host.Scheduler.GenerateAsync(
                new GenerationRequest(Guid.NewGuid(), prompt, null, new GenerationParameters
                {
                    MaxTokens = fixedLength ?? 256, Temperature = 1, Seed = (uint)i, Grammar = gbnf, IgnoreEos = fixedLength is not null,
                }),
                CancellationToken.None)));
            clock.Stop();
            long tokens = outcomes.Sum(o => o.CompletionTokens);
            return (tokens / clock.Elapsed.TotalSeconds, (double)tokens / jobs);
        }

        await Run(grammar, null); // warm-up
        var constrained = await Run(grammar, null);
        // The free run generates as many tokens per job as the constrained one did, so both measure the same work.
        var free = await Run(null, (int)Math.Ceiling(constrained.TokensPerJob));
        return (free.TokensPerSecond, constrained.TokensPerSecond, constrained.TokensPerJob);
    }
}
