using Hangfire;
using LlmServing.ResultStore.Batches;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Background;

/// <summary>
/// Resumes batches whose ingestion stopped showing signs of life: still validating, or running with lines the
/// broker never confirmed, and no chunk written or slice confirmed for <see cref="ProducerOptions.IngestionStallTimeout"/>.
/// That covers a Producer killed mid-file (Hangfire would otherwise wait out its 30-minute invisibility timeout), a
/// retry lost to a queue no server reads, and a batch whose enqueue never happened. Resuming is safe at any time:
/// ingestion continues from the recorded byte offset and the unconfirmed rows, and two runs at once write each chunk
/// once (ADR 0004). Every replica runs this; the claim in PostgreSQL lets one of them resume a given batch.
/// </summary>
public sealed class StalledIngestionReaper(
    BatchStore batches,
    IBackgroundJobClient jobs,
    TimeProvider clock,
    IOptions<ProducerOptions> options,
    ILogger<StalledIngestionReaper> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        var interval = TimeSpan.FromTicks(Math.Clamp(o.IngestionStallTimeout.Ticks / 4, TimeSpan.FromMilliseconds(250).Ticks, TimeSpan.FromSeconds(10).Ticks));
        using var timer = new PeriodicTimer(interval);
        do
        {
            try
            {
                foreach (var id in await batches.ClaimStalledIngestionAsync(o.BatchJobQueue, clock.GetUtcNow() - o.IngestionStallTimeout, stoppingToken))
                {
                    BatchIngestion.Enqueue(jobs, o.EffectiveIngestionQueue, id);
                    logger.LogWarning("Batch {BatchId}: ingestion made no progress for {Timeout}; resumed from its recorded offset", id, o.IngestionStallTimeout);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning(e, "Stalled-ingestion check failed; retrying next interval");
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }
}
