using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace LlmServing.ServiceDefaults;

/// <summary>
/// OpenTelemetry tracing for every host, exported over OTLP when an endpoint is configured
/// (<c>OTEL_EXPORTER_OTLP_ENDPOINT</c>, or <c>Telemetry:OtlpEndpoint</c>): the HTTP request that accepts a job
/// (ASP.NET Core), its publish and consume (MassTransit carries the trace context in message headers), the worker's
/// <c>llm.generate</c> span with queue wait, admission, first token and end as events, and every PostgreSQL command
/// (Npgsql). Without an endpoint nothing is registered and nothing is recorded.
/// </summary>
public static class Telemetry
{
    /// <summary>The activity sources of this system and of the libraries it traces.</summary>
    public static readonly string[] Sources = ["LlmServing.*", "MassTransit", "Npgsql"];

    public static IHostApplicationBuilder AddLlmServingTelemetry(this IHostApplicationBuilder builder, string serviceName)
    {
        var endpoint = builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"] is { Length: > 0 } fromEnvironment
            ? fromEnvironment
            : builder.Configuration["Telemetry:OtlpEndpoint"];
        if (string.IsNullOrEmpty(endpoint) || builder.Services.Any(d => d.ServiceType == typeof(TelemetryRegistered)))
        {
            return builder; // off, or already set up (both modules in one process)
        }

        builder.Services.AddSingleton<TelemetryRegistered>();
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(serviceName))
            .WithTracing(tracing => tracing
                .AddSource(Sources)
                .AddAspNetCoreInstrumentation(o => o.Filter = http =>
                    !http.Request.Path.StartsWithSegments("/metrics") && !http.Request.Path.StartsWithSegments("/health"))
                .AddOtlpExporter(o => o.Endpoint = new Uri(endpoint)));
        return builder;
    }

    private sealed class TelemetryRegistered;
}
