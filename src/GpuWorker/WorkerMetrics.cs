using LlmServing.GpuWorker.Inference;
using LlmServing.GpuWorker.Jobs;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Prometheus;

namespace LlmServing.GpuWorker;

/// <summary>
/// The worker's HTTP port <c>Worker:MetricsPort</c> (off when 0): <c>/metrics</c> (Prometheus: active sequences,
/// peak, decode steps, generated tokens, completed sequences, failed decodes, time to first token),
/// <c>/health/live</c> (the process answers) and <c>/health/ready</c> (the health checks tagged <c>ready</c>: the model
/// is loaded and the bus is connected), for Kubernetes' probes.
/// </summary>
public sealed class WorkerMetrics(
    ISchedulerState scheduler, JobTelemetry telemetry, HealthCheckService health, IOptions<WorkerOptions> options, ILogger<WorkerMetrics> logger)
    : IHostedService
{
    private WebApplication? _server;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (options.Value.MetricsPort <= 0)
        {
            return;
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

        var web = WebApplication.CreateSlimBuilder();
        web.WebHost.UseUrls($"http://0.0.0.0:{options.Value.MetricsPort}");
        web.Logging.ClearProviders();
        _server = web.Build();
        _server.MapGet("/metrics", async (HttpContext http) =>
        {
            http.Response.ContentType = "text/plain; version=0.0.4";
            await registry.CollectAndExportAsTextAsync(http.Response.Body, http.RequestAborted);
            await telemetry.Registry.CollectAndExportAsTextAsync(http.Response.Body, http.RequestAborted);
        });
        _server.MapGet("/health/live", () => Results.Text("live"));
        _server.MapGet("/health/ready", async (CancellationToken ct) =>
        {
            var report = await health.CheckHealthAsync(c => c.Tags.Contains("ready"), ct);
            return report.Status == HealthStatus.Healthy
                ? Results.Text("ready")
                : Results.Text(string.Join("; ", report.Entries.Where(e => e.Value.Status != HealthStatus.Healthy).Select(e => $"{e.Key}: {e.Value.Status}")),
                    statusCode: StatusCodes.Status503ServiceUnavailable);
        });
        await _server.StartAsync(cancellationToken);
        logger.LogInformation("Worker metrics and health on port {Port}", options.Value.MetricsPort);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_server is not null)
        {
            await _server.StopAsync(cancellationToken);
            await _server.DisposeAsync();
        }
    }
}

/// <summary>Ready once the model is loaded (a worker still loading cannot take a job).</summary>
public sealed class ModelLoadedHealthCheck(LlamaModel model) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(model.Loaded.IsCompletedSuccessfully ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy("the model is loading"));
}
