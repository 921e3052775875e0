using LlmServing.Producer;
using LlmServing.GpuWorker;
using LlmServing.GpuWorker.Inference;
using LlmServing.ResultStore.Jobs;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using RabbitMQ.Client;

namespace LlmServing.Benchmarks;

/// <summary>The services the benchmark runs against: a fresh database per run on the configured PostgreSQL.</summary>
public sealed class BenchServices : IAsyncDisposable
{
    private readonly string _server;
    private readonly string _database = $"llmserving_bench_{Guid.NewGuid():N}"[..28];

    private BenchServices(string server, string rabbit)
    {
        _server = server;
        RabbitMq = rabbit;
        Postgres = new NpgsqlConnectionStringBuilder(server) { Database = _database }.ConnectionString;
    }

    public string Postgres { get; }

    public string RabbitMq { get; }

    public static async Task<BenchServices> CreateAsync()
    {
        var server = Environment.GetEnvironmentVariable("ConnectionStrings__Postgres")
                     ?? "Host=127.0.0.1;Port=5432;Username=llmserving;Password=llmserving;Database=llmserving;SSL Mode=Disable";
        var rabbit = Environment.GetEnvironmentVariable("ConnectionStrings__RabbitMq") ?? "amqp://guest:guest@127.0.0.1:5672/";
        var services = new BenchServices(server, rabbit);
        await using var connection = new NpgsqlConnection(server);
        await connection.OpenAsync();
        await using var create = new NpgsqlCommand($"CREATE DATABASE \"{services._database}\"", connection);
        await create.ExecuteNonQueryAsync();
        return services;
    }

    public async Task DeleteQueueAsync(string queue)
    {
        await using var connection = await new ConnectionFactory { Uri = new Uri(RabbitMq) }.CreateConnectionAsync();
        foreach (var q in new[] { queue, queue + "-batch" })
        {
            await using var channel = await connection.CreateChannelAsync();
            await channel.QueueDeleteAsync(q);
            await channel.ExchangeDeleteAsync(q);
        }
    }

    public async ValueTask DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        await using var connection = new NpgsqlConnection(_server);
        await connection.OpenAsync();
        await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS \"{_database}\" WITH (FORCE)", connection);
        await drop.ExecuteNonQueryAsync();
    }
}

/// <summary>A Producer and a worker in this process, on a queue of their own.</summary>
public sealed class BenchStack : IAsyncDisposable
{
    private readonly WebApplication _producer;
    private readonly IHost? _worker;

    private BenchStack(WebApplication producer, IHost? worker, string queue)
    {
        _producer = producer;
        _worker = worker;
        Queue = queue;
        Client = new HttpClient { BaseAddress = new Uri(producer.Urls.First()), Timeout = TimeSpan.FromMinutes(10) };
    }

    public HttpClient Client { get; }

    public string Queue { get; }

    public JobStore Jobs => _producer.Services.GetRequiredService<JobStore>();

    public IServiceProvider? WorkerServices => _worker?.Services;

    /// <param name="services">Where PostgreSQL and RabbitMQ are.</param>
    /// <param name="settings">Worker and Producer settings (Inference:*, Producer:*).</param>
    /// <param name="engineDouble">Replace llama.cpp with <see cref="EngineDouble"/> (plumbing benchmark only).</param>
    /// <param name="withWorker">False runs the Producer alone (the ingestion benchmark).</param>
    public static async Task<BenchStack> StartAsync(BenchServices services, Dictionary<string, string?> settings, bool engineDouble = false, bool withWorker = true)
    {
        var queue = $"llm-jobs-bench-{Guid.NewGuid():N}"[..24];
        var common = new Dictionary<string, string?>(settings)
        {
            ["ConnectionStrings:Postgres"] = services.Postgres,
            ["ConnectionStrings:RabbitMq"] = services.RabbitMq,
            ["Producer:JobQueue"] = queue,
            ["Worker:JobQueue"] = queue,
            ["Worker:BatchJobQueue"] = queue + "-batch",
            ["Producer:BatchJobQueue"] = queue + "-batch",
            ["Logging:LogLevel:Default"] = "Warning",
        };

        var web = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            ContentRootPath = Directory.CreateTempSubdirectory("llmserving-bench-").FullName,
            EnvironmentName = "Benchmark",
        });
        web.Configuration.AddInMemoryCollection(common);
        web.WebHost.UseUrls("http://127.0.0.1:0");
        web.Logging.SetMinimumLevel(LogLevel.Warning);
        web.AddProducer();
        var producer = web.Build();
        producer.MapProducer();
        await producer.StartAsync();
        await producer.Services.GetRequiredService<LlmServing.Producer.Messaging.JobQueueDeclarer>().Declared;

        if (!withWorker)
        {
            return new BenchStack(producer, null, queue);
        }

        var host = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            ContentRootPath = Directory.CreateTempSubdirectory("llmserving-bench-").FullName,
            EnvironmentName = "Benchmark",
        });
        host.Configuration.AddInMemoryCollection(common);
        host.Logging.SetMinimumLevel(LogLevel.Warning);
        if (engineDouble)
        {
            host.Services.AddSingleton<IGenerator, EngineDouble>();
        }

        host.AddGpuWorker(llamaEngine: !engineDouble);
        var worker = host.Build();
        await worker.StartAsync();
        return new BenchStack(producer, worker, queue);
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        if (_worker is not null)
        {
            await _worker.StopAsync();
            _worker.Dispose();
        }

        await _producer.StopAsync();
        await _producer.DisposeAsync();
    }
}

/// <summary>
/// An engine double for the plumbing benchmark only: answers every request at once with a fixed completion, so
/// what is measured is the API, PostgreSQL, RabbitMQ and the consumer, not inference.
/// </summary>
public sealed class EngineDouble : IGenerator
{
    public Task<GenerationOutcome> GenerateAsync(GenerationRequest request, CancellationToken ct) =>
        Task.FromResult(new GenerationOutcome("ok", "length", 4, request.Parameters.MaxTokens));
}
