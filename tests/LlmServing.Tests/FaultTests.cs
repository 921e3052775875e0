using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using LlmServing.Producer.Messaging;

namespace LlmServing.Tests;

/// <summary>Faults injected for real: a poison job, and a worker process killed with SIGKILL mid-generation.</summary>
[TestFixture]
[NonParallelizable]
public sealed class FaultTests
{
    [Test]
    public async Task ShouldFailAPoisonJobWithItsReasonAndKeepServingOthers_WhenTheEngineThrowsEveryTime()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-poison";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            await using var worker = await WorkerInstance.StartAsync(queue, services: EngineFaults.Poison("POISON"));
            var poison = await producer.Client.SubmitAsync(new { prompt = "This is POISON", max_tokens = 4 });
            var healthy = await producer.Client.SubmitAsync(new { prompt = "This is fine", max_tokens = 4 });

            var failed = await producer.Client.WaitForFinalAsync(poison.Id);
            var done = await producer.Client.WaitForFinalAsync(healthy.Id);

            Assert.That(failed.Status, Is.EqualTo(JobStatuses.Failed));
            Assert.That(failed.Error, Does.Contain("Fault injection"));
            Assert.That(failed.Attempts, Is.EqualTo(3));
            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded));
            // The job is failed in PostgreSQL before MassTransit moves the message (declaring the error queue on its
            // first fault): wait for it, then check that only that one is there.
            await Eventually.WaitUntilAsync(async () => await Broker.ErrorCountAsync(queue) >= 1, 15);
            // Both messages are done with (the healthy one acknowledged, the poison one moved): nothing else can arrive.
            await Eventually.WaitUntilAsync(() => worker.Activity.Handled >= 2);
            Assert.That(await Broker.ErrorCountAsync(queue), Is.EqualTo(1), "the poison message is kept in the error queue");
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldRunTheJobOnce_WhenItsMessageIsDeliveredTwice()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-duplicate";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:ContextSize"] = "4096" });
            await using var worker = await WorkerInstance.StartAsync(queue);
            var accepted = await producer.Client.SubmitAsync(new { prompt = "Only once please", max_tokens = 600, ignore_eos = true });
            await producer.Client.WaitForStatusAsync(accepted.Id, JobStatuses.Running);

            // The same message again, as a lost confirm plus the sweep (or any at-least-once path) would send it.
            var services = producer.Services;
            var row = await Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions
                .GetRequiredService<LlmServing.ResultStore.Jobs.JobStore>(services).FindAsync(accepted.Id, "default", CancellationToken.None);
            await Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions
                .GetRequiredService<JobPublisher>(services).TryPublishAsync(row!, CancellationToken.None);
            var done = await producer.Client.WaitForFinalAsync(accepted.Id);
            await Eventually.WaitUntilAsync(() => worker.Activity.Handled >= 2); // the original and the duplicate

            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded));
            Assert.That(done.Attempts, Is.EqualTo(1));
            Assert.That(worker.Scheduler.Counters.SequencesCompleted, Is.EqualTo(1), "generated once");
            Assert.That(await Broker.MessageCountAsync(queue), Is.Zero, "the duplicate was acknowledged");
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldFailOnlyThatJob_WhenAMessageCarriesAGrammarLlamaCppCannotParse()
    {
        // A message that did not come through this Producer's checks (another publisher, an older version): llama.cpp
        // would answer its grammar with a null sampler and the worker would crash on it. It fails the job instead.
        var queue = $"llm-jobs-test-{TestServices.RunId}-badgrammar";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            var accepted = await producer.Client.SubmitAsync(new { prompt = "x", max_tokens = 4, grammar = "root ::= \"ab\"" });
            await producer.Client.WaitForStatusAsync(accepted.Id, JobStatuses.Queued);
            await Broker.PurgeAsync(queue);
            await using (var db = await TestDatabase.OpenAsync())
            {
                await db.ExecAsync($"UPDATE jobs SET request = replace(request::text, 'root ::= ', 'root ::= (')::jsonb WHERE id = '{accepted.Id}'");
            }

            var services = producer.Services;
            var row = await Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions
                .GetRequiredService<LlmServing.ResultStore.Jobs.JobStore>(services).FindAsync(accepted.Id, "default", CancellationToken.None);
            await Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions
                .GetRequiredService<JobPublisher>(services).TryPublishAsync(row!, CancellationToken.None);
            await using var worker = await WorkerInstance.StartAsync(queue);

            var failed = await producer.Client.WaitForFinalAsync(accepted.Id);
            var next = await producer.Client.SubmitAsync(new { prompt = "x", max_tokens = 4, grammar = "root ::= \"ab\"" });
            var done = await producer.Client.WaitForFinalAsync(next.Id);

            Assert.That(failed.Status, Is.EqualTo(JobStatuses.Failed));
            Assert.That(failed.Error, Does.Contain("The grammar is not valid: A group is not closed"));
            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded), "the worker goes on");
            Assert.That(done.OutputText, Is.EqualTo("ab"));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldFinishTheJobExactlyOnce_WhenAWorkerProcessIsKilledMidGeneration()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-kill9";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:ContextSize"] = "4096" });
            await using var doomed = AppProcess.Start(AppProcess.Dll("GpuWorker", "LlmServing.GpuWorker"), new Dictionary<string, string>
            {
                ["Worker__JobQueue"] = queue,
                ["Worker__BatchJobQueue"] = queue + "-batch",
                ["Inference__ModelPath"] = TestServices.ModelPath,
                ["Inference__ContextSize"] = "4096",
            });

            var job = await producer.Client.SubmitAsync(new { prompt = "Interrupted story", max_tokens = 3500, ignore_eos = true });
            var running = await producer.Client.WaitForStatusAsync(job.Id, JobStatuses.Running, TimeSpan.FromSeconds(60));
            Assert.That(running.Status, Is.EqualTo(JobStatuses.Running));
            // A separate process cannot be paced: wait until its row shows generated tokens (mid-generation, a fact
            // the worker wrote), far from the 3500 it would need to finish.
            await Eventually.WaitUntilAsync(async () => await PartialTokensAsync(job.Id) > 0, 60);
            await doomed.KillAsync(); // SIGKILL: no drain, no goodbye
            Assert.That((await producer.Client.GetJobAsync(job.Id)).Status, Is.EqualTo(JobStatuses.Running));

            await using var survivor = await WorkerInstance.StartAsync(queue);
            var done = await producer.Client.WaitForFinalAsync(job.Id, TimeSpan.FromMinutes(2));

            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded), done.Error);
            Assert.That(done.Attempts, Is.EqualTo(2), "the broker redelivered the unacknowledged message once");
            Assert.That(done.Usage!.CompletionTokens, Is.EqualTo(3500), "one complete result, not two halves");
            Assert.That(survivor.Scheduler.Counters.SequencesCompleted, Is.EqualTo(1));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    private static async Task<int> PartialTokensAsync(Guid id)
    {
        await using var db = await TestDatabase.OpenAsync();
        await using var command = db.CreateCommand();
        command.CommandText = $"SELECT coalesce(partial_tokens, 0) FROM jobs WHERE id = '{id}'";
        return Convert.ToInt32(await command.ExecuteScalarAsync());
    }
}
