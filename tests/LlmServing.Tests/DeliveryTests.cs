using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>Accepted jobs are never lost: not when no worker has ever run, not when the broker is unreachable.</summary>
[TestFixture]
[NonParallelizable]
public sealed class DeliveryTests
{
    [Test]
    public async Task ShouldProcessTheJob_WhenItWasSubmittedBeforeAnyWorkerStarted()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-noworker";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            await producer.QueueDeclared.WaitAsync(TimeSpan.FromSeconds(30));
            var accepted = await producer.Client.SubmitAsync(new { prompt = "Waiting for a worker", max_tokens = 8 });

            // No worker has ever consumed this queue: the message must wait in it, not be dropped.
            await Eventually.NeverWithinAsync(async () => await Broker.MessageCountAsync(queue) != 1, TimeSpan.FromSeconds(1), "the message left the queue with no consumer");
            Assert.That((await producer.Client.GetJobAsync(accepted.Id)).Status, Is.EqualTo(JobStatuses.Queued));

            await using var worker = await WorkerInstance.StartAsync(queue);
            var job = await producer.Client.WaitForFinalAsync(accepted.Id);

            Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded), job.Error);
            Assert.That(job.Usage!.CompletionTokens, Is.EqualTo(8));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldPublishTheJobLater_WhenRabbitMqWasDownWhenItWasAccepted()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-brokerdown";
        try
        {
            JobResponse accepted;
            // A Producer whose broker is unreachable (nothing listens on port 1) still accepts the job durably.
            await using (var cutOff = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
                         {
                             ["ConnectionStrings:RabbitMq"] = "amqp://guest:guest@127.0.0.1:1/",
                             ["Producer:PublishTimeout"] = "00:00:01",
                         }))
            {
                accepted = await cutOff.Client.SubmitAsync(new { prompt = "Broker is down", max_tokens = 8 });
                Assert.That(accepted.Status, Is.EqualTo(JobStatuses.Queued));
                Assert.That(accepted.QueuedAt, Is.Null, "the broker never confirmed the message");
            }

            // The broker is reachable again: the sweep publishes the job and a worker runs it.
            await using var producer = await ProducerInstance.StartAsync(queue);
            await using var worker = await WorkerInstance.StartAsync(queue);
            var job = await producer.Client.WaitForFinalAsync(accepted.Id);

            Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded), job.Error);
            Assert.That(job.QueuedAt, Is.Not.Null);
            Assert.That(job.Attempts, Is.EqualTo(1));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }
}
