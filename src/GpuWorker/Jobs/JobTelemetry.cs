using System.Diagnostics;
using LlmServing.GpuWorker.Inference;
using LlmServing.ResultStore.Jobs;
using Prometheus;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// The worker's per-job telemetry: the <c>llm.generate</c> span's events and tags (source <c>LlmServing.GpuWorker</c>)
/// and the time-to-first-token histogram (from the job's acceptance by the API to its first sampled token).
/// </summary>
public sealed class JobTelemetry
{
    public static readonly ActivitySource Source = new("LlmServing.GpuWorker");

    private static readonly double[] Buckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

    /// <summary>Exported on the worker's metrics port.</summary>
    public CollectorRegistry Registry { get; } = Metrics.NewCustomRegistry();

    private readonly Histogram _ttft;

    public JobTelemetry()
    {
        _ttft = Metrics.WithCustomRegistry(Registry).CreateHistogram("llmserving_worker_time_to_first_token_seconds",
            "From the job's acceptance to its first token, by lane (interactive, batch).",
            new HistogramConfiguration { LabelNames = ["lane"], Buckets = Buckets });
    }

    public void Record(Activity? activity, Job job, GenerationOutcome outcome)
    {
        if (outcome.AdmittedAt is { } admitted)
        {
            activity?.AddEvent(new ActivityEvent("admitted", admitted));
        }

        if (outcome.FirstTokenAt is { } first)
        {
            activity?.AddEvent(new ActivityEvent("first_token", first, new ActivityTagsCollection { ["prefill_tokens"] = outcome.PromptTokens - outcome.CachedTokens }));
            _ttft.WithLabels(job.BatchId is null ? "interactive" : "batch").Observe(Math.Max(0, (first - job.CreatedAt).TotalSeconds));
        }

        activity?.AddEvent(new ActivityEvent("finished", DateTimeOffset.UtcNow, new ActivityTagsCollection { ["completion_tokens"] = outcome.CompletionTokens }));
        activity?.SetTag("llmserving.finish_reason", outcome.FinishReason);
        activity?.SetTag("gen_ai.usage.input_tokens", outcome.PromptTokens);
        activity?.SetTag("gen_ai.usage.output_tokens", outcome.CompletionTokens);
        if (outcome.Error is not null)
        {
            activity?.SetStatus(ActivityStatusCode.Error, outcome.Error);
        }
    }
}
