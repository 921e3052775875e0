using Npgsql;
using Prometheus;

namespace LlmServing.Producer;

/// <summary>
/// Prometheus metrics of the Producer (<c>/metrics</c>): jobs by state, and latency histograms of finished jobs
/// (queue wait, run time, total), read from PostgreSQL every few seconds, so they cover every worker.
/// </summary>
public sealed class JobMetrics(NpgsqlDataSource data, CollectorRegistry registry, ILogger<JobMetrics> logger) : BackgroundService
{
    private static readonly double[] Buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var factory = Metrics.WithCustomRegistry(registry);
        var jobs = factory.CreateGauge("llmserving_jobs", "Jobs by status.", "status");
        var latency = factory.CreateHistogram("llmserving_job_latency_seconds", "Latency of succeeded jobs by stage: queue (accepted to started), run (started to finished), total.",
            new HistogramConfiguration { LabelNames = ["stage"], Buckets = Buckets });
        var since = DateTimeOffset.UtcNow;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(5));
        do
        {
            try
            {
                await using (var counts = data.CreateCommand("SELECT status, count(*) FROM jobs GROUP BY status"))
                await using (var reader = await counts.ExecuteReaderAsync(stoppingToken))
                {
                    foreach (var status in new[] { "queued", "running", "succeeded", "failed", "cancelled", "expired" })
                    {
                        jobs.WithLabels(status).Set(0);
                    }

                    while (await reader.ReadAsync(stoppingToken))
                    {
                        jobs.WithLabels(reader.GetString(0)).Set(reader.GetInt64(1));
                    }
                }

                var until = DateTimeOffset.UtcNow;
                await using var finished = data.CreateCommand(
                    "SELECT created_at, started_at, finished_at FROM jobs WHERE status = 'succeeded' AND finished_at > $1 AND finished_at <= $2");
                finished.Parameters.AddWithValue(since);
                finished.Parameters.AddWithValue(until);
                await using (var reader = await finished.ExecuteReaderAsync(stoppingToken))
                {
                    while (await reader.ReadAsync(stoppingToken))
                    {
                        var (created, started, done) = (reader.GetFieldValue<DateTimeOffset>(0), reader.GetFieldValue<DateTimeOffset>(1), reader.GetFieldValue<DateTimeOffset>(2));
                        latency.WithLabels("queue").Observe((started - created).TotalSeconds);
                        latency.WithLabels("run").Observe((done - started).TotalSeconds);
                        latency.WithLabels("total").Observe((done - created).TotalSeconds);
                    }
                }

                since = until;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Metrics collection failed: {Error}", e.Message);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }
}
