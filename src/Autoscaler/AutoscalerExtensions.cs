namespace LlmServing.Autoscaler;

public static class AutoscalerExtensions
{
    public static IHostApplicationBuilder AddAutoscaler(this IHostApplicationBuilder builder)
    {
        builder.Services.AddOptions<AutoscalerOptions>().BindConfiguration(AutoscalerOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(new HttpClient { Timeout = TimeSpan.FromSeconds(5) });
        builder.Services.AddSingleton<QueueDepthProbe>();
        builder.Services.AddSingleton<WorkerLauncher>();
        builder.Services.AddSingleton<AutoscalerService>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<AutoscalerService>());
        return builder;
    }
}
