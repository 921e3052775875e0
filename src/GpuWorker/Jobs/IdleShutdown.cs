using LlmServing.GpuWorker.Inference;
using Microsoft.Extensions.Options;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// Scale to zero from the worker's side: once it has held no job for <see cref="WorkerOptions.IdleTimeout"/>, it
/// stops the host (the same graceful path as SIGTERM: stop consuming, drain) and the process exits with code 0.
/// An autoscaler therefore never has to kill a worker to scale down.
/// </summary>
public sealed class IdleShutdown(
    ISchedulerState scheduler,
    IHostApplicationLifetime lifetime,
    IOptions<WorkerOptions> options,
    ILogger<IdleShutdown> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var timeout = options.Value.IdleTimeout;
        if (timeout <= TimeSpan.Zero)
        {
            return;
        }

        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(Math.Clamp(timeout.TotalMilliseconds / 4, 50, 1000)));
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            var idle = DateTimeOffset.UtcNow - scheduler.LastBusyAt;
            if (idle >= timeout)
            {
                logger.LogInformation("No job for {Idle:F1} s (idle timeout {Timeout}); stopping the worker", idle.TotalSeconds, timeout);
                lifetime.StopApplication();
                return;
            }
        }
    }
}
