using System.ComponentModel.DataAnnotations;
using LlmServing.ResultStore.Jobs;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
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
        var connectionString = builder.Configuration.GetConnectionString("Postgres");
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            throw new ValidationException(
                "ConnectionStrings:Postgres is not set (environment variable ConnectionStrings__Postgres).");
        }

        builder.Services.AddPooledDbContextFactory<LlmServingDbContext>(o => Configure(o, connectionString));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<JobStore>();
        builder.Services.AddHostedService<DatabaseMigrator>();
        return builder;
    }

    internal static void Configure(DbContextOptionsBuilder options, string connectionString) =>
        options.UseNpgsql(connectionString, npgsql => npgsql.EnableRetryOnFailure())
            .UseSnakeCaseNamingConvention();
}

/// <summary>Applies pending migrations at start-up (EF Core takes a lock, so concurrent hosts are safe).</summary>
internal sealed class DatabaseMigrator(IDbContextFactory<LlmServingDbContext> contexts, ILogger<DatabaseMigrator> logger)
    : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
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
