using Microsoft.Extensions.DependencyInjection.Extensions;

namespace LlmServing.Producer.Webhooks;

public static class ResultsOutExtensions
{
    /// <summary>Results out (ADR 0006): events of final states on the bus, signed webhooks, and the counters fed on the way.</summary>
    public static WebApplicationBuilder AddResultsOut(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<WebhookOptions>().BindConfiguration(WebhookOptions.Section);
        builder.Services.TryAddSingleton<IWebhookHostResolver, DnsWebhookHostResolver>();
        builder.Services.AddSingleton<WebhookTargetPolicy>();
        builder.Services.AddSingleton<Usage.TenantUsageMetrics>();
        builder.Services.AddSingleton<JobOutcomeMetrics>();
        builder.Services.AddHostedService<ResultEventDispatcher>();
        builder.Services.AddHostedService<WebhookSender>();
        return builder;
    }
}
