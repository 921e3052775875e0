using System.ComponentModel.DataAnnotations;
using LlmServing.ResultStore.Jobs;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Npgsql;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LlmServing.ResultStore;

public static class ResultStoreExtensions
{
    /// <summary>
    /// Registers a pooled DbContext factory, <see cref="JobStore"/> and a start-up step that applies
    /// migrations before the host serves anything. Connection string: <c>ConnectionStrings:Postgres</c>.
    /// </summary>
    public static IHostApplicationBuilder AddResultStore(this IHostApplicationBuilder builder)
    {
        if (builder.Services.Any(d => d.ServiceType == typeof(JobStore)))
        {
            return builder; // both modules in one process (monolith): registered once
        }

        var connectionString = builder.Configuration.GetConnectionString("Postgres");
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            throw new ValidationException(
                "ConnectionStrings:Postgres is not set (environment variable ConnectionStrings__Postgres).");
        }

        // One data source (one connection pool) for EF Core and raw Npgsql (file chunks, binary COPY of batch lines);
        // created by the container so that it is disposed, with its connections, when the host stops.
        builder.Services.AddSingleton(_ => new NpgsqlDataSourceBuilder(connectionString).Build());
        builder.Services.AddPooledDbContextFactory<LlmServingDbContext>((sp, o) => Configure(o, sp.GetRequiredService<NpgsqlDataSource>()));
        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<JobStore>();
        builder.Services.AddSingleton<Files.FileStore>();
        builder.Services.AddSingleton<Batches.BatchStore>();
        builder.Services.AddSingleton<Batches.BatchLineStore>();
        builder.Services.AddSingleton<Batches.BatchBacklog>();
        builder.Services.AddSingleton<Tenants.ApiKeyStore>();
        builder.Services.AddSingleton<Webhooks.ResultEventStore>();
        builder.Services.AddSingleton<Webhooks.WebhookStore>();
        builder.Services.AddSingleton<Retention.RetentionStore>();
        builder.Services.AddSingleton<Tenants.TenantSettingsStore>();
        builder.Services.AddHostedService<DatabaseMigrator>();
        return builder;
    }

    /// <summary>Applies pending migrations and returns (the <c>--migrate-only</c> mode of a host).</summary>
    public static Task MigrateDatabaseAsync(this IServiceProvider services, CancellationToken ct = default) =>
        ActivatorUtilities.CreateInstance<DatabaseMigrator>(services).MigrateAsync(ct);

    internal static void Configure(DbContextOptionsBuilder options, NpgsqlDataSource dataSource) =>
        options.UseNpgsql(dataSource, npgsql => npgsql.EnableRetryOnFailure())
            .UseSnakeCaseNamingConvention();
}

/// <summary>
/// Applies pending migrations at start-up (EF Core takes a lock, so concurrent hosts are safe), unless
/// <c>Database:MigrateOnStart</c> is false: on Kubernetes a migration Job runs <c>--migrate-only</c> once instead.
/// </summary>
internal sealed class DatabaseMigrator(IDbContextFactory<LlmServingDbContext> contexts, IConfiguration configuration, ILogger<DatabaseMigrator> logger)
    : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) =>
        configuration.GetValue("Database:MigrateOnStart", true) ? MigrateAsync(cancellationToken) : Task.CompletedTask;

    public async Task MigrateAsync(CancellationToken cancellationToken)
    {
        await using var db = await contexts.CreateDbContextAsync(cancellationToken);
        var pending = (await db.Database.GetPendingMigrationsAsync(cancellationToken)).ToList();
        if (pending.Count > 0)
        {
            logger.LogInformation("Applying {Count} database migration(s)", pending.Count);
            await db.Database.MigrateAsync(cancellationToken);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
