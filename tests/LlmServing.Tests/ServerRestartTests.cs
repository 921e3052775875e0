using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>The real servers restarted under load: RabbitMQ while jobs are submitted and run, PostgreSQL while results are written.</summary>
[TestFixture]
[NonParallelizable]
public sealed class ServerRestartTests
{
    [Test]
    public async Task ShouldFinishEveryAcceptedJob_WhenRabbitMqRestartsWhileJobsAreSubmittedAndRun()
    {
        if (!LocalServers.CanRestart)
        {
            Assert.Ignore("Restarts the shared RabbitMQ server: runs where LLMSERVING_TEST_CAN_RESTART_SERVICES=1 (scripts/test.sh sets it when it manages the local servers).");
        }

        var queue = $"llm-jobs-test-{TestServices.RunId}-brokerrestart";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:PublishTimeout"] = "00:00:02",
                ["Producer:SweepMinAge"] = "00:00:01",
            });
            await using var worker = await WorkerInstance.StartAsync(queue);
            var accepted = new List<JobResponse>();
            for (var i = 0; i < 8; i++)
            {
                accepted.Add(await producer.Client.SubmitAsync(new { prompt = $"Before restart {i}", max_tokens = 200, ignore_eos = true }));
            }

            var restart = Task.Run(() => LocalServers.RunAsync("rabbitmqctl", "stop_app").ContinueWith(_ => Task.Delay(2000)).Unwrap()
                .ContinueWith(_ => LocalServers.RunAsync("rabbitmqctl", "start_app")).Unwrap());
            for (var i = 0; i < 8; i++)
            {
                // Submissions during the outage are accepted (durable in PostgreSQL) and published later by the sweep.
                accepted.Add(await producer.Client.SubmitAsync(new { prompt = $"During restart {i}", max_tokens = 50 }));
                await Task.Delay(300);
            }

            await restart;
            var done = await Task.WhenAll(accepted.Select(a => producer.Client.WaitForFinalAsync(a.Id, TimeSpan.FromMinutes(3))));

            Assert.That(done.Select(j => j.Status), Is.All.EqualTo(JobStatuses.Succeeded), string.Join("; ", done.Select(j => $"{j.Status} {j.Error}")));
            Assert.That(done.Take(8).Select(j => j.Usage!.CompletionTokens), Is.All.EqualTo(200));
        }
        finally
        {
            await LocalServers.RunAsync("rabbitmqctl", "start_app");
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldLoseNoResult_WhenPostgreSqlRestartsWhileWorkersAreWriting()
    {
        if (!LocalServers.CanRestart)
        {
            Assert.Ignore("Restarts the shared PostgreSQL server: runs where LLMSERVING_TEST_CAN_RESTART_SERVICES=1 (scripts/test.sh sets it when it manages the local servers).");
        }

        var queue = $"llm-jobs-test-{TestServices.RunId}-pgrestart";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            await using var worker = await WorkerInstance.StartAsync(queue);
            var accepted = new List<JobResponse>();
            for (var i = 0; i < 16; i++)
            {
                accepted.Add(await producer.Client.SubmitAsync(new { prompt = $"Writing through a restart {i}", max_tokens = 60 + (i * 10), ignore_eos = true }));
            }

            // Results are being written while the server goes away; each is either durable or retried, never acked early.
            // Once the shortest job is written the others are still generating (up to 150 tokens longer), or queued.
            await Eventually.WaitUntilAsync(async () => (await producer.Client.GetJobAsync(accepted[0].Id)).Status == JobStatuses.Succeeded, 120);
            await LocalServers.RunAsync("pg_ctlcluster", $"{await LocalServers.PostgresClusterAsync()} restart");
            var done = await Task.WhenAll(accepted.Select(a => producer.Client.WaitForFinalAsync(a.Id, TimeSpan.FromMinutes(3))));

            Assert.That(done.Select(j => j.Status), Is.All.EqualTo(JobStatuses.Succeeded), string.Join("; ", done.Select(j => $"{j.Status} {j.Error}")));
            Assert.That(done.Select(j => j.Usage!.CompletionTokens), Is.EqualTo(Enumerable.Range(0, 16).Select(i => 60 + (i * 10))));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }
}
