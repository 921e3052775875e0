using Npgsql;
using Prometheus;

namespace LlmServing.Producer.Background;

/// <summary>
/// Prometheus metrics of the Producer (<c>/metrics</c>) that are read from PostgreSQL every 5 s, each from a small
/// index, never a scan of the jobs table: jobs queued and running, and the age of the oldest queued job per lane
/// (interactive: the oldest queued job; batch: the oldest running batch). Final states and latencies are counted as
/// their events go out (<see cref="JobOutcomeMetrics"/>).
/// </summary>
public sealed class JobMetrics(NpgsqlDataSource data, CollectorRegistry registry, ILogger<JobMetrics> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var factory = Metrics.WithCustomRegistry(registry);
        var jobs = factory.CreateGauge("llmserving_jobs", "Jobs waiting or running, by status (queued, running).", "status");
        var oldest = factory.CreateGauge("llmserving_oldest_queued_job_age_seconds",
            "Age of the oldest queued work per lane: interactive (oldest queued job), batch (oldest running batch). 0 when none.", "lane");
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(5));
        do
        {
            try
            {
                await using var command = data.CreateCommand("""
                    SELECT (SELECT count(*) FROM jobs WHERE status = 'queued'),
                           (SELECT count(*) FROM jobs WHERE status = 'running'),
                           (SELECT EXTRACT(EPOCH FROM now() - min(created_at)) FROM jobs WHERE status = 'queued' AND batch_id IS NULL),
                           (SELECT EXTRACT(EPOCH FROM now() - min(created_at)) FROM batches WHERE status IN ('validating', 'in_progress'))
                    """);
                await using var reader = await command.ExecuteReaderAsync(stoppingToken);
                await reader.ReadAsync(stoppingToken);
                jobs.WithLabels("queued").Set(reader.GetInt64(0));
                jobs.WithLabels("running").Set(reader.GetInt64(1));
                oldest.WithLabels("interactive").Set(reader.IsDBNull(2) ? 0 : (double)reader.GetDecimal(2));
                oldest.WithLabels("batch").Set(reader.IsDBNull(3) ? 0 : (double)reader.GetDecimal(3));
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Metrics collection failed: {Error}", e.Message);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }
}

/// <summary>
/// Final states and latencies, counted by the result-event dispatcher as each final job's event goes out (so every
/// Producer replica counts the jobs it dispatched, and their sum is the total): <c>llmserving_jobs_finished_total</c>
/// by status, and <c>llmserving_job_latency_seconds</c> by stage (queue: accepted to started; run: started to
/// finished; total) for succeeded jobs.
/// </summary>
public sealed class JobOutcomeMetrics(CollectorRegistry registry)
{
    private static readonly double[] Buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

    private readonly Counter _finished = Metrics.WithCustomRegistry(registry)
        .CreateCounter("llmserving_jobs_finished_total", "Jobs that reached a final state, by status.", "status");

    private readonly Histogram _latency = Metrics.WithCustomRegistry(registry).CreateHistogram("llmserving_job_latency_seconds",
        "Latency of succeeded jobs by stage: queue (accepted to started), run (started to finished), total.",
        new HistogramConfiguration { LabelNames = ["stage"], Buckets = Buckets });

    public void Record(string status, DateTimeOffset created, DateTimeOffset? started, DateTimeOffset? finished)
    {
        _finished.WithLabels(status).Inc();
        if (status == Contracts.JobStatuses.Succeeded && started is { } s && finished is { } f)
        {
            _latency.WithLabels("queue").Observe(Math.Max(0, (s - created).TotalSeconds));
            _latency.WithLabels("run").Observe(Math.Max(0, (f - s).TotalSeconds));
            _latency.WithLabels("total").Observe(Math.Max(0, (f - created).TotalSeconds));
        }
    }
}
