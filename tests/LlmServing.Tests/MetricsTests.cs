using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>Prometheus metrics a user scrapes: jobs by state and latency from the Producer, tokens from a worker.</summary>
[TestFixture]
[NonParallelizable]
public sealed class MetricsTests
{
    [Test]
    public async Task ShouldExposeJobAndWorkerMetrics_WhenAJobHasRun()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-metrics";
        var port = AppProcess.FreePort();
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Worker:MetricsPort"] = port.ToString() });
            await producer.Client.WaitForFinalAsync((await producer.Client.SubmitAsync(new { prompt = "Measure me", max_tokens = 9 })).Id);

            var scraped = await producer.Client.ScrapeOnceAJobIsCountedAsync(seconds: 8);

            using var scraper = new HttpClient();
            var workerMetrics = await scraper.GetStringAsync($"http://127.0.0.1:{port}/metrics");

            Assert.That(scraped, Does.Contain("llmserving_jobs_finished_total{status=\"succeeded\"}"));
            Assert.That(scraped, Does.Contain("llmserving_oldest_queued_job_age_seconds{lane=\"interactive\"}"));
            Assert.That(scraped, Does.Match("llmserving_tenant_tokens_total\\{tenant=\"default\",kind=\"completion\"\\} [1-9]"), "tokens per tenant");
            Assert.That(workerMetrics, Does.Contain("llmserving_worker_time_to_first_token_seconds_count{lane=\"interactive\"} 1"));
            Assert.That(await scraper.GetStringAsync($"http://127.0.0.1:{port}/health/live"), Is.EqualTo("live"));
            Assert.That(await scraper.GetStringAsync($"http://127.0.0.1:{port}/health/ready"), Is.EqualTo("ready"));
            Assert.That(scraped, Does.Match(JobsClient.JobCounted.ToString()));
            Assert.That(workerMetrics, Does.Contain("llmserving_worker_tokens_generated_total 9"));
            Assert.That(workerMetrics, Does.Contain("llmserving_worker_sequences_completed_total 1"));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }
}
