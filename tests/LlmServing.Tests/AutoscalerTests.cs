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
    private static string WorkerDll => Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory,
        "../../../../../src/GpuWorker/bin/Debug/net10.0/LlmServing.GpuWorker.dll"));

    private static async Task<IHost> StartAutoscalerAsync(string queue, int maxWorkers, string idleTimeout)
    {
        Assume.That(File.Exists(WorkerDll), Is.True, $"build the solution first: {WorkerDll}");
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
            ["Autoscaler:MaxWorkers"] = maxWorkers.ToString(),
            ["Autoscaler:WorkerCommand"] = "dotnet",
            ["Autoscaler:WorkerArguments"] = $"\"{WorkerDll}\"",
            ["Autoscaler:WorkerIdleTimeout"] = idleTimeout,
            ["Autoscaler:WorkerEnvironment:ConnectionStrings__Postgres"] = TestServices.Postgres,
            ["Autoscaler:WorkerEnvironment:ConnectionStrings__RabbitMq"] = TestServices.RabbitMq,
            ["Autoscaler:WorkerEnvironment:Worker__JobQueue"] = queue,
            ["Autoscaler:WorkerEnvironment:Worker__BatchJobQueue"] = queue + "-batch",
            ["Autoscaler:WorkerEnvironment:Inference__ModelPath"] = TestServices.ModelPath,
            ["Autoscaler:WorkerEnvironment:Inference__ContextSize"] = "2048",
            ["Autoscaler:WorkerEnvironment:Logging__LogLevel__Default"] = "Warning",
        });
        builder.AddAutoscaler();
        builder.Services.AddSingleton<IWorkerProcessObserver, ExitCodes>();
        var autoscaler = builder.Build();
        await autoscaler.StartAsync();
        return autoscaler;
    }

    [Test]
    public async Task ShouldScaleFromZeroToOneAndBackToZero_WhenJobsComeAndGo()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-autoscale";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            await producer.QueueDeclared;
            using var autoscaler = await StartAutoscalerAsync(queue, maxWorkers: 2, idleTimeout: "00:00:03");
            var launcher = autoscaler.Services.GetRequiredService<WorkerLauncher>();
            try
            {
                await Eventually.NeverWithinAsync(() => launcher.Started > 0, TimeSpan.FromSeconds(1.5), "nothing to do: no worker");

                var jobs = await Task.WhenAll(Enumerable.Range(0, 3).Select(i => producer.Client.SubmitAsync(new { prompt = $"Cold start {i}", max_tokens = 8 })));
                var done = await Task.WhenAll(jobs.Select(j => producer.Client.WaitForFinalAsync(j.Id, TimeSpan.FromSeconds(90))));

                Assert.That(done.Select(j => j.Status), Is.All.EqualTo(JobStatuses.Succeeded));
                Assert.That(launcher.Started, Is.EqualTo(1), "3 jobs, 8 per worker: one worker");

                await Eventually.WaitUntilAsync(() => launcher.Running == 0, 60);
                Assert.That(((ExitCodes)autoscaler.Services.GetRequiredService<IWorkerProcessObserver>()).Codes, Is.EqualTo(new[] { 0 }),
                    "the worker idled out and exited cleanly");

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

    [Test]
    public async Task ShouldNeverRunMoreWorkerProcessesThanMaxWorkers_DuringABurst()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-burst";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            await producer.QueueDeclared;
            // A worker whose share of the burst is done waits 10 s before it exits: the tail of the burst (the last jobs,
            // held by the other worker) ends well within that on a slow machine, so no third worker is started for it.
            using var autoscaler = await StartAutoscalerAsync(queue, maxWorkers: 2, idleTimeout: "00:00:10");
            var launcher = autoscaler.Services.GetRequiredService<WorkerLauncher>();
            try
            {
                // The live worker processes, as the operating system sees them (starting ones included), every 100 ms.
                var peak = 0;
                using var sampling = new CancellationTokenSource();
                var sampler = Task.Run(async () =>
                {
                    while (!sampling.IsCancellationRequested)
                    {
                        peak = Math.Max(peak, WorkerProcesses());
                        await Task.Delay(100);
                    }
                });

                var jobs = await Task.WhenAll(Enumerable.Range(0, 240).Select(i => producer.Client.SubmitAsync(new { prompt = $"Burst {i}", max_tokens = 16 })));
                var done = await Task.WhenAll(jobs.Select(j => producer.Client.WaitForFinalAsync(j.Id, TimeSpan.FromMinutes(3))));
                await Eventually.WaitUntilAsync(() => launcher.Running == 0, 60);
                await sampling.CancelAsync();
                await sampler;
                TestContext.Out.WriteLine($"peak {peak} live worker processes; {launcher.Started} started");

                Assert.That(done.Select(j => j.Status), Is.All.EqualTo(JobStatuses.Succeeded));
                Assert.That(peak, Is.InRange(1, 2), "never more live processes than MaxWorkers");
                Assert.That(launcher.Started, Is.EqualTo(2), "no worker replaced at the tail of the burst while the others held the last jobs");
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

    /// <summary>Processes whose command line runs the worker assembly (read from /proc).</summary>
    private static int WorkerProcesses() =>
        Directory.EnumerateDirectories("/proc").Count(dir =>
        {
            try
            {
                return int.TryParse(Path.GetFileName(dir), out _) && File.ReadAllText(Path.Combine(dir, "cmdline")).Contains("LlmServing.GpuWorker.dll", StringComparison.Ordinal);
            }
            catch (IOException)
            {
                return false; // exited while being read
            }
            catch (UnauthorizedAccessException)
            {
                return false;
            }
        });

    /// <summary>The exit codes of the worker processes, as the launcher reports them.</summary>
    private sealed class ExitCodes : IWorkerProcessObserver
    {
        public System.Collections.Concurrent.ConcurrentQueue<int> Codes { get; } = new();

        public void Started(int processId, DateTimeOffset at)
        {
        }

        public void Output(int processId, string line)
        {
        }

        public void Exited(int processId, int exitCode, DateTimeOffset at) => Codes.Enqueue(exitCode);
    }
}
