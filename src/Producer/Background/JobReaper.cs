using LlmServing.ResultStore.Jobs;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace LlmServing.Producer.Background;

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

                var ready = await ReadyMessagesAsync(factory, queues, stoppingToken);
                foreach (var queue in queues)
                {
                    if (ready.GetValueOrDefault(queue) == 0)
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

    /// <summary>
    /// Ready messages per queue (passive declare: exact at once), over one connection per pass; a queue the broker
    /// cannot tell about (unreachable, or the queue is missing) is left out.
    /// </summary>
    private static async Task<Dictionary<string, uint?>> ReadyMessagesAsync(ConnectionFactory factory, string[] queues, CancellationToken ct)
    {
        var ready = new Dictionary<string, uint?>();
        try
        {
            await using var connection = await factory.CreateConnectionAsync("llmserving-producer-reaper", ct);
            foreach (var queue in queues)
            {
                try
                {
                    // A channel per queue: a failed passive declare closes its channel.
                    await using var channel = await connection.CreateChannelAsync(cancellationToken: ct);
                    ready[queue] = (await channel.QueueDeclarePassiveAsync(queue, ct)).MessageCount;
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    ready[queue] = null;
                }
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The broker is unreachable: no queue counts as empty.
        }

        return ready;
    }
}
