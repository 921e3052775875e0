using LlmServing.Producer;
using System.Net.Http.Json;
using System.Text.Json;
using LlmServing.GpuWorker;
using LlmServing.GpuWorker.Inference;
using LlmServing.GpuWorker.Jobs;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using LlmServing.Producer.Application;
using LlmServing.Producer.Messaging;

namespace LlmServing.Tests.Infrastructure;

/// <summary>A real Producer on Kestrel (loopback, free port) against the run's PostgreSQL and RabbitMQ.</summary>
public sealed class ProducerInstance : IAsyncDisposable
{
    private readonly WebApplication _app;

    private ProducerInstance(WebApplication app, HttpClient client)
    {
        _app = app;
        Client = client;
    }

    public HttpClient Client { get; }

    public IServiceProvider Services => _app.Services;

    public static async Task<ProducerInstance> StartAsync(string queue, IDictionary<string, string?>? settings = null, Action<IServiceCollection>? services = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            ContentRootPath = Directory.CreateTempSubdirectory("llmserving-producer-").FullName,
            EnvironmentName = "Testing",
        });
        builder.Configuration.AddInMemoryCollection(Merge(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Postgres"] = TestServices.Postgres,
            ["ConnectionStrings:RabbitMq"] = TestServices.RabbitMq,
            ["Producer:JobQueue"] = queue,
            ["Producer:BatchJobQueue"] = queue + "-batch",
            ["Producer:ContextSize"] = "1024",
            ["Producer:SweepInterval"] = "00:00:00.250",
            ["Producer:SweepMinAge"] = "00:00:01",
        }, settings));
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.AddProducer();
        services?.Invoke(builder.Services);
        var app = builder.Build();
        app.MapProducer();
        await app.StartAsync();
        var client = new HttpClient { BaseAddress = new Uri(app.Urls.First()), Timeout = TimeSpan.FromMinutes(2) };
        return new ProducerInstance(app, client);
    }

    public Task QueueDeclared => Services.GetRequiredService<JobQueueDeclarer>().Declared;

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    internal static IEnumerable<KeyValuePair<string, string?>> Merge(
        Dictionary<string, string?> defaults, IDictionary<string, string?>? overrides)
    {
        foreach (var (k, v) in overrides ?? new Dictionary<string, string?>())
        {
            defaults[k] = v;
        }

        return defaults;
    }
}

/// <summary>A real GPU worker host (llama.cpp on the generated model) consuming the given queue.</summary>
public sealed class WorkerInstance : IAsyncDisposable
{
    private readonly IHost _host;

    private WorkerInstance(IHost host) => _host = host;

    public BatchScheduler Scheduler => _host.Services.GetRequiredService<BatchScheduler>();

    /// <summary>The messages it received and is done with (see <see cref="ConsumeActivity.Handled"/>).</summary>
    public ConsumeActivity Activity => _host.Services.GetRequiredService<ConsumeActivity>();

    /// <param name="queue">The job queue (and, with "-batch", the batch queue) it consumes.</param>
    /// <param name="settings">Configuration over the test defaults.</param>
    /// <param name="services">Extra registrations, e.g. the engine fault injectors of <see cref="EngineFaults"/>.</param>
    public static async Task<WorkerInstance> StartAsync(string queue, IDictionary<string, string?>? settings = null, Action<IServiceCollection>? services = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            ContentRootPath = Directory.CreateTempSubdirectory("llmserving-worker-").FullName,
            EnvironmentName = "Testing",
        });
        builder.Configuration.AddInMemoryCollection(ProducerInstance.Merge(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Postgres"] = TestServices.Postgres,
            ["ConnectionStrings:RabbitMq"] = TestServices.RabbitMq,
            ["Worker:JobQueue"] = queue,
            ["Worker:BatchJobQueue"] = queue + "-batch",
            ["Inference:ModelPath"] = TestServices.ModelPath,
            ["Inference:ContextSize"] = "4096",
            ["Inference:Slots"] = "8",
            ["Inference:Threads"] = "2",
        }, settings));
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.AddGpuWorker();
        services?.Invoke(builder.Services);
        var host = builder.Build();
        await host.StartAsync();
        return new WorkerInstance(host);
    }

    /// <summary>Stops the host the way SIGTERM does (graceful drain), then frees it.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await _host.StopAsync();
        _host.Dispose();
    }

    private bool _disposed;
}

/// <summary>Direct broker access for assertions and clean-up.</summary>
public static class Broker
{
    public static async Task<uint> MessageCountAsync(string queue)
    {
        await using var connection = await new ConnectionFactory { Uri = new Uri(TestServices.RabbitMq) }.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        var ok = await channel.QueueDeclarePassiveAsync(queue);
        return ok.MessageCount;
    }

    /// <summary>Messages in a queue's error queue; 0 when MassTransit never created one (nothing ever faulted).</summary>
    public static async Task<uint> ErrorCountAsync(string queue)
    {
        try
        {
            return await MessageCountAsync(queue + "_error");
        }
        catch (RabbitMQ.Client.Exceptions.OperationInterruptedException e) when (e.ShutdownReason?.ReplyCode == 404)
        {
            return 0;
        }
    }

    /// <summary>Drops every ready message of a queue (as if they were dead-lettered or lost).</summary>
    public static async Task PurgeAsync(string queue)
    {
        await using var connection = await new ConnectionFactory { Uri = new Uri(TestServices.RabbitMq) }.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        await channel.QueuePurgeAsync(queue);
    }

    public static async Task DeleteAsync(params string[] queues)
    {
        await using var connection = await new ConnectionFactory { Uri = new Uri(TestServices.RabbitMq) }.CreateConnectionAsync();
        foreach (var q in queues.Concat(queues.Select(q => q + "-batch")))
        {
            await using var channel = await connection.CreateChannelAsync();
            await channel.QueueDeleteAsync(q);
            await channel.QueueDeleteAsync(q + "_error");
            await channel.QueueDeleteAsync(q + "_skipped");
            await channel.ExchangeDeleteAsync(q);
            await channel.ExchangeDeleteAsync(q + "_error");
            await channel.ExchangeDeleteAsync(q + "_skipped");
        }
    }
}

/// <summary>Calls the jobs API the way a client would.</summary>
public static class JobsClient
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    public static async Task<JobResponse> SubmitAsync(this HttpClient client, object body)
    {
        using var response = await client.PostAsJsonAsync("/v1/jobs", body, Json);
        var text = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(202), text);
        Assert.That(response.Headers.Location?.ToString(), Does.EndWith("/v1/jobs/" + JsonDocument.Parse(text).RootElement.GetProperty("id").GetString()));
        return JsonSerializer.Deserialize<JobResponse>(text, Json)!;
    }

    public static async Task<JobResponse> CancelAsync(this HttpClient client, Guid id)
    {
        using var response = await client.PostAsync($"/v1/jobs/{id}/cancel", null);
        var text = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(200), text);
        return JsonSerializer.Deserialize<JobResponse>(text, Json)!;
    }

    /// <summary>Polls until the job has the status (or is final), at most <paramref name="timeout"/>.</summary>
    public static async Task<JobResponse> WaitForStatusAsync(this HttpClient client, Guid id, string status, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (true)
        {
            var job = await client.GetJobAsync(id);
            if (job.Status == status || Contracts.JobStatuses.IsFinal(job.Status) || DateTime.UtcNow > deadline)
            {
                return job;
            }

            await Task.Delay(20);
        }
    }

    public static async Task<JobResponse> GetJobAsync(this HttpClient client, Guid id, int waitSeconds = 0)
    {
        var job = await client.GetFromJsonAsync<JobResponse>($"/v1/jobs/{id}?wait={waitSeconds}", Json);
        return job!;
    }

    /// <summary>Long-polls until the job is final or <paramref name="timeout"/> passes.</summary>
    public static async Task<JobResponse> WaitForFinalAsync(this HttpClient client, Guid id, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        while (true)
        {
            var job = await client.GetJobAsync(id, waitSeconds: 10);
            if (Contracts.JobStatuses.IsFinal(job.Status) || DateTime.UtcNow > deadline)
            {
                return job;
            }
        }
    }

    /// <summary>
    /// The Producer's <c>/metrics</c> once it counts at least one finished job's latency, or as it is after
    /// <paramref name="seconds"/>: a job's counters are written as its result event goes out, a moment after it is final.
    /// At least one, not exactly: every Producer sends (and counts) the result events still owed in the database, so a
    /// job an earlier test's Producer left owed may be counted too.
    /// </summary>
    public static async Task<string> ScrapeOnceAJobIsCountedAsync(this HttpClient client, int seconds)
    {
        var scraped = "";
        for (var i = 0; i < seconds * 10 && !JobCounted.IsMatch(scraped); i++)
        {
            await Task.Delay(100);
            scraped = await client.GetStringAsync("/metrics");
        }

        return scraped;
    }

    /// <summary>The latency histogram has counted at least one finished job.</summary>
    public static readonly System.Text.RegularExpressions.Regex JobCounted = new(@"llmserving_job_latency_seconds_count\{stage=""total""\} [1-9]");
}
