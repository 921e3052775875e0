namespace LlmServing.Producer.Retention;

public static class RetentionExtensions
{
    /// <summary>Retention: the recurring clean-up of files, jobs, batches and webhook deliveries.</summary>
    public static WebApplicationBuilder AddRetention(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<RetentionOptions>().BindConfiguration(RetentionOptions.Section);
        builder.Services.AddHostedService<RetentionSweeper>();
        return builder;
    }
}
