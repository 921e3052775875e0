using System.Net.Http.Json;
using System.Text.Json.Nodes;
using LlmServing.Autoscaler;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace LlmServing.Benchmarks;

public sealed record ColdStart(double ToProcessStart, double ToModelLoaded, double ToJobStarted, double ToResult, double ScaleToZero, int BurstJobs, int BurstWorkersStarted, int BurstPolicyMax, double BurstSeconds);

/// <summary>
/// From zero workers: the local autoscaler (1 s poll) sees a job, starts a worker process, the worker loads the model,
/// claims the job and writes the result. Then the time to be back at zero workers (idle timeout), and a burst of
/// jobs: workers started against what the policy allows.
/// </summary>
public static class ColdStartBenchmark
{
    public static async Task<ColdStart> RunAsync(BenchServices services, string modelPath, int burstJobs)
    {
        await using var stack = await BenchStack.StartAsync(services, new() { ["Producer:ContextSize"] = "2048" }, withWorker: false);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { ContentRootPath = Directory.CreateTempSubdirectory("llmserving-cold-").FullName });
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Autoscaler:Queues:0"] = stack.Queue,
            ["Autoscaler:Queues:1"] = stack.Queue + "-batch",
            ["Autoscaler:PollingInterval"] = "00:00:01",
            ["Autoscaler:AmqpUrl"] = services.RabbitMq,
            ["Autoscaler:Cooldown"] = "00:00:02",
            ["Autoscaler:MaxWorkers"] = "4",
            ["Autoscaler:WorkerCommand"] = "dotnet",
            ["Autoscaler:WorkerArguments"] = $"\"{WorkerDll()}\"",
            ["Autoscaler:WorkerIdleTimeout"] = "00:00:05",
            ["Autoscaler:WorkerEnvironment:ConnectionStrings__Postgres"] = services.Postgres,
            ["Autoscaler:WorkerEnvironment:ConnectionStrings__RabbitMq"] = services.RabbitMq,
            ["Autoscaler:WorkerEnvironment:Worker__JobQueue"] = stack.Queue,
            ["Autoscaler:WorkerEnvironment:Worker__BatchJobQueue"] = stack.Queue + "-batch",
            ["Autoscaler:WorkerEnvironment:Inference__ModelPath"] = Path.GetFullPath(modelPath),
            ["Autoscaler:WorkerEnvironment:Inference__ContextSize"] = "2048",
            ["Autoscaler:WorkerEnvironment:Database__MigrateOnStart"] = "false",
        });
        builder.AddAutoscaler();
        var log = new WorkerProcessLog();
        builder.Services.AddSingleton<IWorkerProcessObserver>(log);
        using var autoscaler = builder.Build();
        await autoscaler.StartAsync();
        var launcher = autoscaler.Services.GetRequiredService<WorkerLauncher>();
        try
        {
            var body = new { prompt = "Cold start", max_tokens = 1 };
            var id = await SubmitAsync(stack, body);
            var one = await EndToEndBenchmark.WaitAsync(services.Postgres, [id]);
            var (created, started, finished) = await TimesAsync(services.Postgres, id);
            var processStart = log.StartedAt[0];
            var modelLoaded = log.ModelLoadedAt.Count > 0 ? log.ModelLoadedAt[0] : finished;
            while (launcher.Running > 0)
            {
                await Task.Delay(50);
            }

            var zero = (log.ExitedAt[^1] - finished).TotalSeconds;

            var startedBefore = launcher.Started;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var ids = new Guid[burstJobs];
            await Parallel.ForEachAsync(Enumerable.Range(0, burstJobs), new ParallelOptions { MaxDegreeOfParallelism = 32 },
                async (i, _) => ids[i] = await SubmitAsync(stack, body));
            await EndToEndBenchmark.WaitAsync(services.Postgres, ids);
            clock.Stop();
            var policyMax = ScalingPolicy.Decide(new QueueDepth(burstJobs, 0, 0), 0, DateTimeOffset.UtcNow, new ScalingState(null),
                autoscaler.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<AutoscalerOptions>>().Value.Settings).Desired;
            return new ColdStart(
                (processStart - created).TotalSeconds, (modelLoaded - created).TotalSeconds, (started - created).TotalSeconds,
                (finished - created).TotalSeconds, zero, burstJobs, launcher.Started - startedBefore, policyMax, clock.Elapsed.TotalSeconds);
        }
        finally
        {
            await autoscaler.StopAsync();
            await services.DeleteQueueAsync(stack.Queue);
        }
    }

    private static async Task<Guid> SubmitAsync(BenchStack stack, object body)
    {
        using var response = await stack.Client.PostAsJsonAsync("/v1/jobs", body);
        response.EnsureSuccessStatusCode();
        return Guid.Parse(JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>());
    }

    private static async Task<(DateTimeOffset Created, DateTimeOffset Started, DateTimeOffset Finished)> TimesAsync(string postgres, Guid id)
    {
        await using var db = new NpgsqlConnection(postgres);
        await db.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT created_at, started_at, finished_at FROM jobs WHERE id = $1", db);
        command.Parameters.AddWithValue(id);
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return (reader.GetFieldValue<DateTimeOffset>(0), reader.GetFieldValue<DateTimeOffset>(1), reader.GetFieldValue<DateTimeOffset>(2));
    }

    /// <summary>The built worker of this repository (same configuration as the benchmark).</summary>
    private static string WorkerDll()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "LlmServing.sln")))
        {
            directory = directory.Parent;
        }

        var configuration = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        return Path.Combine(directory!.FullName, "src/GpuWorker/bin", configuration, "net10.0/LlmServing.GpuWorker.dll");
    }
}
