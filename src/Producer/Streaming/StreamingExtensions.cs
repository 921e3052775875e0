namespace LlmServing.Producer.Streaming;

public static class StreamingExtensions
{
    /// <summary>Waiting on jobs without polling: one LISTEN connection per Producer, and the follower streams read through.</summary>
    public static WebApplicationBuilder AddStreaming(this WebApplicationBuilder builder)
    {
        builder.Services.AddSingleton<JobChangeListener>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<JobChangeListener>());
        builder.Services.AddSingleton<JobFollower>();
        return builder;
    }
}
