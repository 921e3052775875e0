using LlmServing.Contracts;
using LlmServing.GpuWorker.Inference;
using LlmServing.ResultStore.Jobs;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// Cold start: run once what the first job will run (a one-token generation, then the claim, the result write and the
/// cancellation check, which open the database connections and make EF Core build its model and compile that query),
/// so that the first user's job does not pay for it, and do it beside the bus start rather than before it: the bus
/// connects and starts consuming meanwhile (a job taken before the model is loaded waits for it in the scheduler).
/// </summary>
public sealed class WorkerWarmup(LlamaModel model, BatchScheduler scheduler, JobStore jobs, ILogger<WorkerWarmup> logger) : IHostedService
{
    private readonly CancellationTokenSource _stopping = new();
    private Task _warming = Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _warming = Task.Run(() => WarmAsync(_stopping.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    private async Task WarmAsync(CancellationToken ct)
    {
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            await model.Loaded.WaitAsync(ct);
            // Jobs may already be running beside it: it is left out of the counters rather than resetting them.
            await scheduler.GenerateAsync(new GenerationRequest(Guid.Empty, "warm up", null, new GenerationParameters { MaxTokens = 1, Temperature = 0 }) { IsWarmup = true }, ct);
            var token = clock.ElapsedMilliseconds;
            // After the token, not beside the model load: a job waiting at start runs these statements itself, and doing
            // them twice at once only slows both down on a small machine.
            await jobs.TryStartAsync(Guid.Empty, "warmup", ct);
            await jobs.CompleteAsync(Guid.Empty, new JobResult("", "stop", 0, 0), ct);
            await jobs.FindCancelRequestedAsync([Guid.Empty], ct);
            logger.LogInformation("Warm-up done: one token {Token} ms, database statements {Total} ms after start", token, clock.ElapsedMilliseconds);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            logger.LogWarning("Warm-up failed ({Error}); the first job warms up instead", e.Message);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        await _warming.WaitAsync(cancellationToken).ContinueWith(_ => { }, TaskScheduler.Default);
        _stopping.Dispose();
    }
}
