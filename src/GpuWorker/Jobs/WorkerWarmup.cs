using LlmServing.Contracts;
using LlmServing.GpuWorker.Inference;
using LlmServing.ResultStore.Jobs;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// Cold start: before the worker takes its first message, run once what its first job will run (the database
/// statements, which EF Core compiles on first use, and a one-token generation), so that the first user's job does
/// not pay for it.
/// </summary>
public sealed class WorkerWarmup(LlamaModel model, BatchScheduler scheduler, JobStore jobs, ILogger<WorkerWarmup> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await model.Loaded.WaitAsync(cancellationToken);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await jobs.TryStartAsync(Guid.Empty, "warmup", cancellationToken);
        await jobs.CompleteAsync(Guid.Empty, new JobResult("", "stop", 0, 0), cancellationToken);
        await jobs.FindCancelRequestedAsync([Guid.Empty], cancellationToken);
        await scheduler.GenerateAsync(new GenerationRequest(Guid.Empty, "warm up", null, new GenerationParameters { MaxTokens = 1, Temperature = 0 }), cancellationToken);
        scheduler.Counters.Reset();
        logger.LogInformation("Warm-up done in {Ms} ms", clock.ElapsedMilliseconds);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
