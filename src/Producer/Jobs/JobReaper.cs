using LlmServing.ResultStore.Jobs;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace LlmServing.Producer.Jobs;

/// <summary>
/// Finds accepted jobs that nothing will finish and hands them back to the publish sweep (ADR 0005):
/// <list type="bullet">
/// <item>running jobs whose lease lapsed: their worker died, or their message was dead-lettered after a PostgreSQL
/// outage longer than the consumer's retries, so no worker holds them any more;</item>
/// <item>queued jobs the broker confirmed long ago (<see cref="ProducerOptions.LostMessageAge"/>) while their queue
/// holds no ready message: their message is gone (dead-lettered or purged).</item>
/// </list>
/// Leases are only judged after this Producer has reached PostgreSQL for a whole lease without a failed pass, so
/// workers had their chance to renew after an outage. A job sent twice still runs once (the claim is conditional).
/// </summary>
public sealed class JobReaper(
    JobStore jobs,
    IConfiguration configuration,
    TimeProvider clock,
    IOptions<ProducerOptions> options,
    ILogger<JobReaper> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        string[] queues = [o.JobQueue, o.BatchJobQueue];
        var factory = new ConnectionFactory { Uri = new Uri(configuration.GetConnectionString("RabbitMq")!) };
        DateTimeOffset? reachableSince = null;
        using var timer = new PeriodicTimer(o.ReaperInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                reachableSince ??= clock.GetUtcNow();
                if (clock.GetUtcNow() - reachableSince >= o.JobLease)
                {
                    var orphaned = await jobs.RequeueOrphanedAsync(queues, stoppingToken);
                    if (orphaned.Count > 0)
                    {
                        logger.LogWarning("Requeued {Count} running job(s) whose lease lapsed (worker gone or message lost)", orphaned.Count);
                    }
                }

                foreach (var queue in queues)
                {
                    if (await ReadyMessagesAsync(factory, queue, stoppingToken) == 0)
                    {
                        var lost = await jobs.RequeueLostAsync(queue, queue == o.JobQueue, o.LostMessageAge, stoppingToken);
                        if (lost > 0)
                        {
                            logger.LogWarning("Requeued {Count} queued job(s) of {Queue} whose message is no longer in the broker", lost, queue);
                        }
                    }
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                reachableSince = null;
                logger.LogWarning("Job reaper pass failed ({Error}); retrying next interval", e.Message);
            }
        }
    }

    /// <summary>Ready messages in a queue (passive declare: exact at once); null when the broker cannot say.</summary>
    private static async Task<uint?> ReadyMessagesAsync(ConnectionFactory factory, string queue, CancellationToken ct)
    {
        try
        {
            await using var connection = await factory.CreateConnectionAsync("llmserving-producer-reaper", ct);
            await using var channel = await connection.CreateChannelAsync(cancellationToken: ct);
            return (await channel.QueueDeclarePassiveAsync(queue, ct)).MessageCount;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return null;
        }
    }
}
