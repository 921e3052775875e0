using Microsoft.Extensions.Diagnostics.HealthChecks;
using Npgsql;

namespace LlmServing.Producer.Http;

/// <summary>Ready only while PostgreSQL answers: without it no job can be accepted durably.</summary>
public sealed class DatabaseHealthCheck(NpgsqlDataSource data) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            await using var command = data.CreateCommand("SELECT 1");
            await command.ExecuteScalarAsync(cancellationToken);
            return HealthCheckResult.Healthy();
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException)
        {
            return HealthCheckResult.Unhealthy("PostgreSQL does not answer", e);
        }
    }
}
