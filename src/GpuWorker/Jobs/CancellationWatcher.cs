using LlmServing.GpuWorker.Inference;
using LlmServing.ResultStore.Jobs;
using Microsoft.Extensions.Options;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// Looks up, every <see cref="WorkerOptions.CancelPollInterval"/>, whether a user cancelled one of the jobs this
/// worker holds, and tells the scheduler to drop it. One small indexed query per interval per worker; no extra
/// broker topology, and nothing is missed if a worker was busy or restarting when the cancel arrived.
/// </summary>
public sealed class CancellationWatcher(
    ISchedulerState scheduler,
    IGenerator generator,
    JobStore jobs,
    IOptions<WorkerOptions> options,
    ILogger<CancellationWatcher> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.CancelPollInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                var held = scheduler.JobIds;
                foreach (var id in await jobs.FindCancelRequestedAsync(held, stoppingToken))
                {
                    if (generator.RequestCancel(id))
                    {
                        logger.LogInformation("Job {JobId}: cancel requested, dropping it at the next step", id);
                    }
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Cancellation check failed ({Error}); retrying", e.Message);
            }
        }
    }
}
