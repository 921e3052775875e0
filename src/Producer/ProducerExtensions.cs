using Microsoft.Extensions.DependencyInjection.Extensions;
using LlmServing.ServiceDefaults;
using System.Text.Json;
using LlmServing.ResultStore;
using Hangfire;
using MassTransit;
using Microsoft.Extensions.Options;
using Prometheus;
using Scalar.AspNetCore;
using LlmServing.Producer.Application;
using LlmServing.Producer.Background;
using LlmServing.Producer.Http;
using LlmServing.Producer.Http.OpenAi;
using LlmServing.Producer.Messaging;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Producer;

public static class ProducerExtensions
{
    /// <summary>
    /// Adds the Producer: result store, RabbitMQ (MassTransit, send-only), the job queue declaration, the publish
    /// sweep and the API's JSON and problem-details conventions. Needs <c>ConnectionStrings:Postgres</c> and
    /// <c>ConnectionStrings:RabbitMq</c>.
    /// </summary>
    /// <param name="builder">The web application builder.</param>
    /// <param name="ownBus">False when a composition root configures one MassTransit bus for several modules.</param>
    public static WebApplicationBuilder AddProducer(this WebApplicationBuilder builder, bool ownBus = true)
    {
        builder.AddResultStore();
        builder.AddLlmServingTelemetry("llmserving-producer");
        builder.Services.AddOptions<ProducerOptions>().BindConfiguration(ProducerOptions.Section)
            .ValidateDataAnnotations()
            .Validate(o => !o.RequireAdminKey || o.AdminKey.Length >= 16,
                "Producer:RequireAdminKey is set (a deployment reachable by others) but Producer:AdminKey is empty or shorter " +
                "than 16 characters: set Producer__AdminKey from a secret, or unset RequireAdminKey for local use only.")
            .ValidateOnStart();
        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.Never;
        });
        builder.Services.AddProblemDetails();
        builder.AddTenantLimits();
        builder.Services.AddHealthChecks().AddCheck<DatabaseHealthCheck>("database", tags: ["ready"]);
        builder.Services.AddOpenApi();

        BusDefaults.RabbitMqAddress(builder.Configuration); // fails fast when not configured
        if (ownBus)
        {
            builder.AddLlmServingBus(); // send-only: the Producer consumes nothing
        }

        builder.Services.AddSingleton<JobQueueDeclarer>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<JobQueueDeclarer>());
        builder.Services.AddSingleton<JobPublisher>();
        builder.Services.AddSingleton<SubmitStageMetrics>();
        builder.Services.AddSingleton<JobSubmitter>();
        builder.Services.AddSingleton<JobRequestReader>();
        builder.Services.AddHostedService<PublishSweeper>();
        builder.Services.AddHostedService<JobReaper>();
        builder.AddStreaming();
        builder.AddResultsOut();
        builder.AddRetention();
        builder.AddBatches();
        builder.AddOperatorConsole();
        builder.Services.AddSingleton(_ => Prometheus.Metrics.NewCustomRegistry());
        builder.Services.AddHostedService<JobMetrics>();
        return builder;
    }

    /// <summary>Maps the API, the OpenAPI document (<c>/openapi/v1.json</c>) and the interactive page (<c>/docs</c>).</summary>
    public static WebApplication MapProducer(this WebApplication app)
    {
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.UseNulGuard();
        app.UseApiKeys();
        app.UseRateLimiter();
        app.MapOpenApi();
        app.MapScalarApiReference("/docs");
        app.MapGet("/", () => Results.Redirect("/docs")).ExcludeFromDescription();
        // Live: the process answers. Ready: PostgreSQL answers, which is all accepting a job needs (ADR 0001: accept
        // now, publish later), so a broker outage does not take every Producer out of service. The bus has its own
        // check, for dashboards and alerts.
        app.MapHealthChecks("/health/live", new Microsoft.AspNetCore.Diagnostics.HealthChecks.HealthCheckOptions { Predicate = _ => false });
        app.MapHealthChecks("/health/ready", new Microsoft.AspNetCore.Diagnostics.HealthChecks.HealthCheckOptions
        {
            // MassTransit tags its bus check "ready" as well; it is left to /health/broker.
            Predicate = check => check.Tags.Contains("ready") && !check.Tags.Contains("masstransit"),
        });
        app.MapHealthChecks("/health/broker", new Microsoft.AspNetCore.Diagnostics.HealthChecks.HealthCheckOptions
        {
            Predicate = check => check.Tags.Contains("masstransit"),
        });
        app.MapMetrics("/metrics", app.Services.GetRequiredService<Prometheus.CollectorRegistry>()).ExcludeFromDescription();
        app.MapHangfireDashboard("/hangfire", new Hangfire.DashboardOptions
        {
            Authorization = [new AdminKeyDashboardFilter(app.Services.GetRequiredService<IOptions<ProducerOptions>>().Value.AdminKey)],
        }, app.Services.GetRequiredService<Hangfire.JobStorage>()).ExcludeFromDescription();
        app.MapAdminApi();
        app.MapJobsApi();
        app.MapFilesApi();
        app.MapBatchesApi();
        app.MapWebhooksApi();
        app.MapOpenAiApi();
        app.MapJobStreamApi();
        app.MapUsageApi();
        app.MapOperatorConsole();
        return app;
    }

    /// <summary>Waiting on jobs without polling: one LISTEN connection per Producer, and the follower streams read through.</summary>
    private static WebApplicationBuilder AddStreaming(this WebApplicationBuilder builder)
    {
        builder.Services.AddSingleton<JobChangeListener>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<JobChangeListener>());
        builder.Services.AddSingleton<JobFollower>();
        return builder;
    }

    /// <summary>Results out (ADR 0006): events of final states on the bus, signed webhooks, and the counters fed on the way.</summary>
    private static WebApplicationBuilder AddResultsOut(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<WebhookOptions>().BindConfiguration(WebhookOptions.Section);
        builder.Services.TryAddSingleton<IWebhookHostResolver, DnsWebhookHostResolver>();
        builder.Services.AddSingleton<WebhookTargetPolicy>();
        builder.Services.AddSingleton<TenantUsageMetrics>();
        builder.Services.AddSingleton<JobOutcomeMetrics>();
        builder.Services.AddHostedService<ResultEventDispatcher>();
        builder.Services.AddHostedService<WebhookSender>();
        return builder;
    }

    /// <summary>Retention: the recurring clean-up of files, jobs, batches and webhook deliveries.</summary>
    private static WebApplicationBuilder AddRetention(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<RetentionOptions>().BindConfiguration(RetentionOptions.Section);
        builder.Services.AddHostedService<RetentionSweeper>();
        return builder;
    }

    /// <summary>
    /// Batch files: Hangfire (on the same PostgreSQL) runs the durable ingestion jobs; the releaser sends lines a
    /// tenant's window at a time (ADR 0007); the finalizer ends batches; the reaper resumes stalled ingestion.
    /// </summary>
    private static WebApplicationBuilder AddBatches(this WebApplicationBuilder builder)
    {
        builder.Services.AddSingleton<CreateBatch>();
        builder.Services.AddSingleton<CancelBatch>();
        builder.Services.AddIngestionHangfire(builder.Configuration.GetConnectionString("Postgres")!);
        builder.Services.AddHostedService<BatchFinalizer>();
        builder.Services.AddHostedService<BatchReleaser>();
        builder.Services.AddHostedService<StalledIngestionReaper>();
        return builder;
    }
}
