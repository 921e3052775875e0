using LlmServing.ResultStore.Jobs;
using Microsoft.EntityFrameworkCore;

namespace LlmServing.ResultStore;

/// <summary>The system's only durable state: jobs (and later batches and tenants).</summary>
public sealed class LlmServingDbContext(DbContextOptions<LlmServingDbContext> options) : DbContext(options)
{
    public DbSet<Job> Jobs => Set<Job>();

    public DbSet<Files.StoredFile> Files => Set<Files.StoredFile>();

    public DbSet<Files.FileChunk> FileChunks => Set<Files.FileChunk>();

    public DbSet<Batches.Batch> Batches => Set<Batches.Batch>();

    protected override void OnModelCreating(ModelBuilder modelBuilder) =>
        modelBuilder.ApplyConfigurationsFromAssembly(typeof(LlmServingDbContext).Assembly);
}
