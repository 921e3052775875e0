using Hangfire;
using Hangfire.AspNetCore;
using Hangfire.PostgreSql;
using Hangfire.PostgreSql.Factories;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Background;

/// <summary>
/// Hangfire for the ingestion jobs, wired per host instead of through Hangfire's process-wide globals (storage,
/// activator, log provider), so that several hosts in one process (monolith, tests, benchmarks) each keep their own.
/// </summary>
public static class IngestionHangfire
{
    private static readonly Lock Once = new();
    private static bool _configured;

    public static IServiceCollection AddIngestionHangfire(this IServiceCollection services, string connectionString)
    {
        lock (Once)
        {
            if (!_configured)
            {
                // Process-wide, but the same for every host: how jobs are serialized.
                GlobalConfiguration.Configuration.UseSimpleAssemblyNameTypeSerializer().UseRecommendedSerializerSettings();
                _configured = true;
            }
        }

        var options = new PostgreSqlStorageOptions
        {
            SchemaName = "hangfire",
            PrepareSchemaIfNecessary = true,
            // A job running longer than the invisibility timeout must not be picked up twice (Hangfire.PostgreSql #209).
            UseSlidingInvisibilityTimeout = true,
            QueuePollInterval = TimeSpan.FromMilliseconds(250),
        };
        services.AddSingleton<JobStorage>(_ => new PostgreSqlStorage(new NpgsqlConnectionFactory(connectionString, options), options));
        services.AddSingleton<IBackgroundJobClient>(sp => new BackgroundJobClient(sp.GetRequiredService<JobStorage>()));
        // The dashboard only checks that Hangfire was configured; storage and authorization are passed explicitly.
        services.AddSingleton<IGlobalConfiguration>(_ => GlobalConfiguration.Configuration);
        services.AddSingleton(Hangfire.Dashboard.DashboardRoutes.Routes);
        services.AddTransient<BatchIngestion>();
        services.AddHostedService<IngestionServer>();
        return services;
    }
}

/// <summary>Runs this Producer's Hangfire server on its own ingestion queue.</summary>
public sealed class IngestionServer(JobStorage storage, IServiceScopeFactory scopes, IOptions<ProducerOptions> options) : IHostedService, IDisposable
{
    private BackgroundJobServer? _server;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var queue = options.Value.EffectiveIngestionQueue;
        _server = new BackgroundJobServer(new BackgroundJobServerOptions
        {
            Queues = [queue],
            WorkerCount = 2,
            ServerName = $"llmserving-producer:{Environment.ProcessId}:{queue}:{Guid.NewGuid():N}"[..60],
            Activator = new AspNetCoreJobActivator(scopes),
            SchedulePollingInterval = TimeSpan.FromSeconds(1),
        }, storage);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_server is not null)
        {
            _server.SendStop();
            await _server.WaitForShutdownAsync(cancellationToken);
        }
    }

    public void Dispose() => _server?.Dispose();
}

/// <summary>
/// The Hangfire dashboard (<c>/hangfire</c>) needs the admin key once API keys are on (HTTP basic auth with any user
/// name and the admin key as password, so that a browser can open it); without an admin key, local requests only.
/// </summary>
public sealed class AdminKeyDashboardFilter(string adminKey) : Hangfire.Dashboard.IDashboardAuthorizationFilter
{
    public bool Authorize(Hangfire.Dashboard.DashboardContext context)
    {
        var http = Hangfire.Dashboard.AspNetCoreDashboardContextExtensions.GetHttpContext(context);
        if (string.IsNullOrEmpty(adminKey))
        {
            var remote = http.Connection.RemoteIpAddress;
            // An unknown remote address (e.g. an in-process test server) is not trusted.
            return remote is not null && System.Net.IPAddress.IsLoopback(remote);
        }

        var header = http.Request.Headers.Authorization.ToString();
        if (header.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
        {
            try
            {
                var pair = System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(header[6..].Trim()));
                var password = pair[(pair.IndexOf(':') + 1)..];
                if (System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(
                        System.Text.Encoding.UTF8.GetBytes(password), System.Text.Encoding.UTF8.GetBytes(adminKey)))
                {
                    return true;
                }
            }
            catch (FormatException)
            {
            }
        }

        http.Response.Headers.WWWAuthenticate = "Basic realm=\"llmserving-hangfire\"";
        return false;
    }
}
