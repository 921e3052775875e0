using LlmServing.ServiceDefaults;
using LlmServing.Producer.Usage;
using LlmServing.Producer.OperatorConsole;
using LlmServing.Producer.Streaming;
using LlmServing.Producer.Retention;
using LlmServing.Producer.Webhooks;
using System.Text.Json;
using LlmServing.Producer.Batches;
using LlmServing.Producer.Files;
using LlmServing.Producer.Http;
using LlmServing.Producer.Jobs;
using LlmServing.Producer.Messaging;
using LlmServing.Producer.Tenants;
using LlmServing.ResultStore;
using Hangfire;
using MassTransit;
using Microsoft.Extensions.Options;
using Prometheus;
using Scalar.AspNetCore;

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
}
