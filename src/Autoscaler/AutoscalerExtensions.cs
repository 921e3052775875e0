using Prometheus;

namespace LlmServing.Autoscaler;

public static class AutoscalerExtensions
{
    public static IHostApplicationBuilder AddAutoscaler(this IHostApplicationBuilder builder)
    {
        builder.Services.AddOptions<AutoscalerOptions>().BindConfiguration(AutoscalerOptions.Section).ValidateDataAnnotations().ValidateOnStart()
            .PostConfigure(o =>
            {
                if (o.Queues.Length == 0)
                {
                    o.Queues = AutoscalerOptions.DefaultQueues;
                }

                // The batch backlog in PostgreSQL counts as depth (ADR 0007); the workers' own connection string by default.
                if (string.IsNullOrEmpty(o.BacklogConnectionString))
                {
                    o.BacklogConnectionString = builder.Configuration.GetConnectionString("Postgres") ?? "";
                }
            });
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(new HttpClient { Timeout = TimeSpan.FromSeconds(5) });
        builder.Services.AddSingleton<QueueDepthProbe>();
        builder.Services.AddSingleton<WorkerLauncher>();
        builder.Services.AddSingleton<AutoscalerService>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<AutoscalerService>());
        var port = builder.Configuration.GetValue($"{AutoscalerOptions.Section}:MetricsPort", 0);
        if (port > 0)
        {
            builder.Services.AddMetricServer(o => o.Port = (ushort)port); // queue depth, workers wanted and running
        }
        return builder;
    }
}
