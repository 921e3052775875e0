using LlmServing.ServiceDefaults;
using LlmServing.GpuWorker.Inference;
using LlmServing.GpuWorker.Jobs;
using LlmServing.ResultStore;
using MassTransit;
using Microsoft.Extensions.Options;

namespace LlmServing.GpuWorker;

public static class WorkerExtensions
{
    /// <summary>
    /// Adds the GPU worker: the model (loaded once at start-up), the batch scheduler, and a RabbitMQ consumer whose
    /// prefetch and concurrency equal the scheduler's slots, so the broker hands over no more jobs than can run.
    /// Needs <c>ConnectionStrings:Postgres</c>, <c>ConnectionStrings:RabbitMq</c> and <c>Inference:ModelPath</c>.
    /// </summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="llamaEngine">
    /// False leaves out llama.cpp (model, scheduler, cancellation watcher): the caller registers its own
    /// <see cref="IGenerator"/>. Only the plumbing benchmark does that, with an engine double.
    /// </param>
    /// <param name="ownBus">False when a composition root configures one MassTransit bus for several modules; it then
    /// calls <see cref="AddWorkerConsumers"/> and <see cref="ConfigureWorkerEndpoints"/> itself.</param>
    public static IHostApplicationBuilder AddGpuWorker(this IHostApplicationBuilder builder, bool llamaEngine = true, bool ownBus = true)
    {
        builder.AddResultStore();
        builder.AddLlmServingTelemetry("llmserving-worker");
        // The quiet levels of appsettings.json also when the worker runs from elsewhere (the autoscaler starts it with
        // another working directory, where that file is not found): llama.cpp's ~300 load lines and EF Core's line per
        // statement written to a pipe cost a cold start about 0.7 s. Configuration still decides when it names them.
        foreach (var category in new[] { "LlamaCpp", "Microsoft.EntityFrameworkCore", "MassTransit" })
        {
            if (builder.Configuration[$"Logging:LogLevel:{category}"] is null)
            {
                builder.Logging.AddFilter(category, LogLevel.Warning);
            }
        }

        var inferenceOptions = builder.Services.AddOptions<InferenceOptions>().BindConfiguration(InferenceOptions.Section);
        builder.Services.AddOptions<WorkerOptions>().BindConfiguration(WorkerOptions.Section)
            .ValidateDataAnnotations().ValidateOnStart();

        builder.Services.AddSingleton<HeldJobs>();
        builder.Services.AddSingleton<ConsumeActivity>();
        builder.Services.AddReceiveEndpointObserver<ConsumeActivity.ReadyObserver>();
        builder.Services.AddSingleton<JobWrites>();
        builder.Services.AddSingleton<JobTelemetry>();
        builder.Services.AddSingleton(sp => new SlotGate(sp.GetRequiredService<IOptions<InferenceOptions>>().Value.Slots));
        builder.Services.AddHostedService<JobLeaseRenewer>();
        if (llamaEngine)
        {
            inferenceOptions.ValidateDataAnnotations().ValidateOnStart();
            builder.Services.AddSingleton<LlamaModel>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<LlamaModel>());
            builder.Services.AddSingleton<ProgressWriter>();
            builder.Services.AddSingleton<IProgressSink>(sp => sp.GetRequiredService<ProgressWriter>());
            builder.Services.AddHostedService(sp => sp.GetRequiredService<ProgressWriter>());
            builder.Services.AddSingleton<BatchScheduler>();
            builder.Services.AddSingleton<IGenerator>(sp => sp.GetRequiredService<BatchScheduler>());
            builder.Services.AddSingleton<ISchedulerState>(sp => sp.GetRequiredService<BatchScheduler>());
            builder.Services.AddHostedService(sp => sp.GetRequiredService<BatchScheduler>());
            builder.Services.AddHostedService<WorkerWarmup>(); // before MassTransit starts consuming
            builder.Services.AddHostedService<CancellationWatcher>();
            builder.Services.AddHostedService<IdleShutdown>();
            builder.Services.AddHealthChecks().AddCheck<ModelLoadedHealthCheck>("model", tags: ["ready"]);
            builder.Services.AddHostedService<WorkerMetrics>();
        }

        BusDefaults.RabbitMqAddress(builder.Configuration); // fails fast when not configured
        if (ownBus)
        {
            builder.AddLlmServingBus(AddWorkerConsumers, ConfigureWorkerEndpoints);
        }

        // Graceful stop: MassTransit stops receiving, waits DrainTimeout for running jobs, then cancels the rest;
        // a cancelled consume is not acknowledged, so RabbitMQ hands the message to another worker.
        var drain = builder.Configuration.GetValue<TimeSpan?>($"{WorkerOptions.Section}:{nameof(WorkerOptions.DrainTimeout)}")
                    ?? new WorkerOptions().DrainTimeout;
        builder.Services.Configure<MassTransitHostOptions>(o =>
        {
            o.ConsumerStopTimeout = drain;
            o.StopTimeout = drain + TimeSpan.FromSeconds(15);
        });
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = drain + TimeSpan.FromSeconds(30));
        return builder;
    }

    public static void AddWorkerConsumers(IBusRegistrationConfigurator x) => x.AddConsumer<GenerateCompletionConsumer>();

    /// <summary>
    /// Interactive jobs and batch lines come from two queues; each may hold up to Slots unacknowledged messages
    /// here, and the scheduler admits interactive ones first when a slot frees.
    /// </summary>
    public static void ConfigureWorkerEndpoints(IBusRegistrationContext context, IRabbitMqBusFactoryConfigurator cfg)
    {
        var worker = context.GetRequiredService<IOptions<WorkerOptions>>().Value;
        var inference = context.GetRequiredService<IOptions<InferenceOptions>>().Value;
        foreach (var queue in new[] { worker.JobQueue, worker.BatchJobQueue })
        {
            cfg.ReceiveEndpoint(queue, e =>
            {
                // Jobs are sent to the queue by address; no binding to the message-type exchange is needed.
                e.ConfigureConsumeTopology = false;
                e.PrefetchCount = inference.Slots;
                e.ConcurrentMessageLimit = inference.Slots;
                // A transient failure (e.g. the database restarting) runs the job again rather than losing it.
                // A poison job (failed on every attempt) goes straight to the error queue.
                e.UseMessageRetry(r =>
                {
                    r.Intervals(500, 2000, 5000);
                    r.Ignore<PoisonJobException>();
                });
                e.ConfigureConsumer<GenerateCompletionConsumer>(context);
            });
        }
    }
}
