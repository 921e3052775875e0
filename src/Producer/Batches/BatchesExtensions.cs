namespace LlmServing.Producer.Batches;

public static class BatchesExtensions
{
    /// <summary>
    /// Batch files: Hangfire (on the same PostgreSQL) runs the durable ingestion jobs; the releaser sends lines a
    /// tenant's window at a time (ADR 0007); the finalizer ends batches; the reaper resumes stalled ingestion.
    /// </summary>
    public static WebApplicationBuilder AddBatches(this WebApplicationBuilder builder)
    {
        builder.Services.AddSingleton<CreateBatch>();
        builder.Services.AddIngestionHangfire(builder.Configuration.GetConnectionString("Postgres")!);
        builder.Services.AddHostedService<BatchFinalizer>();
        builder.Services.AddHostedService<BatchReleaser>();
        builder.Services.AddHostedService<StalledIngestionReaper>();
        return builder;
    }
}
