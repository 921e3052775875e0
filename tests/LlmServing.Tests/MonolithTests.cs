using LlmServing.Producer;
using LlmServing.Contracts;
using LlmServing.GpuWorker.Inference;
using LlmServing.Monolith;
using LlmServing.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LlmServing.Tests;

/// <summary>The same modules as one process: a job runs end to end through the monolith's composition root.</summary>
[TestFixture]
[NonParallelizable]
public sealed class MonolithTests
{
    [Test]
    public async Task ShouldRunAJobEndToEnd_WhenProducerAndWorkerShareOneProcess()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-monolith";
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            ContentRootPath = Directory.CreateTempSubdirectory("llmserving-monolith-").FullName,
            EnvironmentName = "Testing",
        });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Postgres"] = TestServices.Postgres,
            ["ConnectionStrings:RabbitMq"] = TestServices.RabbitMq,
            ["Producer:JobQueue"] = queue,
            ["Producer:BatchJobQueue"] = queue + "-batch",
            ["Worker:JobQueue"] = queue,
            ["Worker:BatchJobQueue"] = queue + "-batch",
            ["Inference:ModelPath"] = TestServices.ModelPath,
            ["Inference:ContextSize"] = "2048",
            ["Inference:Threads"] = "2",
        });
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.AddMonolith();
        await using var app = builder.Build();
        app.MapProducer();
        await app.StartAsync();
        try
        {
            using var client = new HttpClient { BaseAddress = new Uri(app.Urls.First()) };
            var job = await client.WaitForFinalAsync((await client.SubmitAsync(new { prompt = "One process", max_tokens = 12 })).Id);

            Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded), job.Error);
            Assert.That(job.Usage!.CompletionTokens, Is.EqualTo(12));
            Assert.That(app.Services.GetRequiredService<BatchScheduler>().Counters.SequencesCompleted, Is.EqualTo(1));
        }
        finally
        {
            await app.StopAsync();
            await Broker.DeleteAsync(queue);
        }
    }
}
