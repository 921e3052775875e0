using LlmServing.Autoscaler;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LlmServing.Tests;

/// <summary>
/// Scale to zero and back with real processes: the local autoscaler starts worker processes (the built GpuWorker on
/// the generated model) from the RabbitMQ management API's queue depth; workers exit on their idle timeout.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class AutoscalerTests
{
    [Test]
    public async Task ShouldScaleFromZeroToOneAndBackToZero_WhenJobsComeAndGo()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-autoscale";
        var workerDll = Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory,
            "../../../../../src/GpuWorker/bin/Debug/net10.0/LlmServing.GpuWorker.dll"));
        Assume.That(File.Exists(workerDll), Is.True, $"build the solution first: {workerDll}");
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            await producer.QueueDeclared;
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
            {
                ContentRootPath = Directory.CreateTempSubdirectory("llmserving-autoscaler-").FullName,
                EnvironmentName = "Testing",
            });
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Autoscaler:Queues:0"] = queue,
                ["Autoscaler:Queues:1"] = queue + "-batch",
                ["Autoscaler:ManagementUrl"] = Environment.GetEnvironmentVariable("LLMSERVING_RABBITMQ_MANAGEMENT") ?? "http://guest:guest@127.0.0.1:15672/",
                ["Autoscaler:PollingInterval"] = "00:00:00.500",
                ["Autoscaler:AmqpUrl"] = TestServices.RabbitMq,
                ["Autoscaler:Cooldown"] = "00:00:02",
                ["Autoscaler:MaxWorkers"] = "2",
                ["Autoscaler:WorkerCommand"] = "dotnet",
                ["Autoscaler:WorkerArguments"] = $"\"{workerDll}\"",
                ["Autoscaler:WorkerIdleTimeout"] = "00:00:03",
                ["Autoscaler:WorkerEnvironment:ConnectionStrings__Postgres"] = TestServices.Postgres,
                ["Autoscaler:WorkerEnvironment:ConnectionStrings__RabbitMq"] = TestServices.RabbitMq,
                ["Autoscaler:WorkerEnvironment:Worker__JobQueue"] = queue,
                ["Autoscaler:WorkerEnvironment:Worker__BatchJobQueue"] = queue + "-batch",
                ["Autoscaler:WorkerEnvironment:Inference__ModelPath"] = TestServices.ModelPath,
                ["Autoscaler:WorkerEnvironment:Inference__ContextSize"] = "2048",
                ["Autoscaler:WorkerEnvironment:Logging__LogLevel__Default"] = "Warning",
            });
            builder.AddAutoscaler();
            using var autoscaler = builder.Build();
            await autoscaler.StartAsync();
            var launcher = autoscaler.Services.GetRequiredService<WorkerLauncher>();
            try
            {
                await Task.Delay(1500);
                Assert.That(launcher.Started, Is.Zero, "nothing to do: no worker");

                var jobs = await Task.WhenAll(Enumerable.Range(0, 3).Select(i => producer.Client.SubmitAsync(new { prompt = $"Cold start {i}", max_tokens = 8 })));
                var done = await Task.WhenAll(jobs.Select(j => producer.Client.WaitForFinalAsync(j.Id, TimeSpan.FromSeconds(90))));

                Assert.That(done.Select(j => j.Status), Is.All.EqualTo(JobStatuses.Succeeded));
                Assert.That(launcher.Started, Is.EqualTo(1), "3 jobs, 8 per worker: one worker");

                await Eventually.WaitUntilAsync(() => launcher.Running == 0, 60);
                Assert.That(launcher.ExitCodes, Is.EqualTo(new[] { 0 }), "the worker idled out and exited cleanly");

                var again = await producer.Client.SubmitAsync(new { prompt = "Back from zero", max_tokens = 8 });
                var result = await producer.Client.WaitForFinalAsync(again.Id, TimeSpan.FromSeconds(90));

                Assert.That(result.Status, Is.EqualTo(JobStatuses.Succeeded));
                Assert.That(launcher.Started, Is.EqualTo(2));
            }
            finally
            {
                await autoscaler.StopAsync();
            }
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }
}
