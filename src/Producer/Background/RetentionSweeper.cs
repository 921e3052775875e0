using LlmServing.ResultStore.Retention;
using Microsoft.Extensions.Options;

namespace LlmServing.Producer.Background;

/// <summary>
/// The recurring clean-up: expired files (never one that a running batch reads), final jobs past retention (their
/// usage kept in <c>usage_daily</c>), finished batches whose lines are gone, old webhook deliveries. Page by page, each
/// page one short statement, so it never holds long locks and replicas share the work.
/// </summary>
public sealed class RetentionSweeper(RetentionStore store, IOptions<RetentionOptions> options, ILogger<RetentionSweeper> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.Interval);
        do
        {
            try
            {
                await SweepAsync(stoppingToken);
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                logger.LogWarning(e, "Retention clean-up failed; retrying next interval");
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    /// <summary>One full pass; returns (files, jobs, batches, deliveries) deleted.</summary>
    public async Task<(int Files, int Jobs, int Batches, int Deliveries)> SweepAsync(CancellationToken ct)
    {
        var o = options.Value;
        var files = await Drain(() => store.DeleteExpiredFilesAsync(Math.Min(o.PageSize, 100), ct), Math.Min(o.PageSize, 100));
        var jobs = o.Jobs > TimeSpan.Zero ? await Drain(() => store.DeleteExpiredJobsAsync(o.Jobs, o.PageSize, ct), o.PageSize) : 0;
        var batches = o.Jobs > TimeSpan.Zero ? await Drain(() => store.DeleteExpiredBatchesAsync(o.Jobs, o.PageSize, ct), o.PageSize) : 0;
        var deliveries = o.DeliveryLog > TimeSpan.Zero ? await Drain(() => store.DeleteOldDeliveriesAsync(o.DeliveryLog, o.PageSize, ct), o.PageSize) : 0;
        if (files + jobs + batches + deliveries > 0)
        {
            logger.LogInformation("Retention deleted {Files} files, {Jobs} jobs, {Batches} batches, {Deliveries} webhook deliveries",
                files, jobs, batches, deliveries);
        }

        return (files, jobs, batches, deliveries);
    }

    private static async Task<int> Drain(Func<Task<int>> page, int size)
    {
        var total = 0;
        int deleted;
        do
        {
            deleted = await page();
            total += deleted;
        }
        while (deleted == size);
        return total;
    }
}
