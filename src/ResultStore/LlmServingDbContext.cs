using LlmServing.ResultStore.Jobs;
using Microsoft.EntityFrameworkCore;

namespace LlmServing.ResultStore;

/// <summary>The system's only durable state: jobs (and later batches and tenants).</summary>
public sealed class LlmServingDbContext(DbContextOptions<LlmServingDbContext> options) : DbContext(options)
{
    public DbSet<Job> Jobs => Set<Job>();

    protected override void OnModelCreating(ModelBuilder modelBuilder) =>
        modelBuilder.ApplyConfigurationsFromAssembly(typeof(LlmServingDbContext).Assembly);
}
