using System.Diagnostics;
using Prometheus;

namespace LlmServing.Producer.Application;

/// <summary>
/// Where the time of accepting a job goes (<c>llmserving_submit_stage_seconds{stage}</c>): <c>read</c> (body and
/// validation), <c>insert</c> (the durable row, grouped with concurrent submissions), <c>publish</c> (the broker's
/// confirm and its record) and <c>total</c> (the whole request in the handler). <c>llmserving load --stages</c> prints
/// them beside its own percentiles.
/// </summary>
public sealed class SubmitStageMetrics(CollectorRegistry registry)
{
    private static readonly double[] Buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

    private readonly Histogram _stages = Metrics.WithCustomRegistry(registry).CreateHistogram("llmserving_submit_stage_seconds",
        "Time of each stage of accepting a job: read (body and validation), insert (durable row), publish (broker confirm and its record), total.",
        new HistogramConfiguration { LabelNames = ["stage"], Buckets = Buckets });

    /// <summary>Records the time since <paramref name="started"/> (a <see cref="Stopwatch.GetTimestamp"/>) for a stage.</summary>
    public void Observe(string stage, long started) => _stages.WithLabels(stage).Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
}
