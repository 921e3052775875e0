using LlmServing.GpuWorker.Inference;
using Microsoft.Extensions.Options;
using Prometheus;

namespace LlmServing.GpuWorker;

/// <summary>
/// Prometheus metrics of one worker on <c>http://*:{Worker:MetricsPort}/metrics</c> (off when the port is 0):
/// active sequences, peak, decode steps, generated tokens (rate() of it is tokens/s), completed sequences.
/// </summary>
public sealed class WorkerMetrics(ISchedulerState scheduler, IOptions<WorkerOptions> options, ILogger<WorkerMetrics> logger) : IHostedService
{
    private KestrelMetricServer? _server;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (options.Value.MetricsPort <= 0)
        {
            return Task.CompletedTask;
        }

        var registry = Metrics.NewCustomRegistry();
        var factory = Metrics.WithCustomRegistry(registry);
        var active = factory.CreateGauge("llmserving_worker_active_sequences", "Sequences in the batch now.");
        var peak = factory.CreateGauge("llmserving_worker_peak_active_sequences", "Most sequences in one decode step so far.");
        var steps = factory.CreateCounter("llmserving_worker_decode_steps_total", "llama_decode calls.");
        var tokens = factory.CreateCounter("llmserving_worker_tokens_generated_total", "Tokens generated (rate() gives tokens/s).");
        var completed = factory.CreateCounter("llmserving_worker_sequences_completed_total", "Sequences that ended.");
        var failures = factory.CreateCounter("llmserving_worker_decode_failures_total", "Failed decodes (executor rebuilt).");
        registry.AddBeforeCollectCallback(() =>
        {
            var c = scheduler.Counters;
            active.Set(c.ActiveSequences);
            peak.Set(c.PeakActiveSequences);
            steps.IncTo(c.DecodeSteps);
            tokens.IncTo(c.TokensGenerated);
            completed.IncTo(c.SequencesCompleted);
            failures.IncTo(c.DecodeFailures);
        });
        _server = new KestrelMetricServer(options.Value.MetricsPort, registry: registry);
        _server.Start();
        logger.LogInformation("Worker metrics on port {Port}", options.Value.MetricsPort);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_server is not null)
        {
            await _server.StopAsync();
        }
    }
}
