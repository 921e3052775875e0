using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace LlmServing.Producer.Messaging;

/// <summary>
/// Declares the job queue (and MassTransit's exchange of the same name bound to it) when the Producer starts, so
/// jobs sent before any worker has ever run wait in a durable queue instead of being dropped by an unbound
/// exchange. Retries in the background while the broker is unreachable; the API accepts jobs meanwhile.
/// </summary>
public sealed class JobQueueDeclarer(
    IOptions<ProducerOptions> options,
    IConfiguration configuration,
    ILogger<JobQueueDeclarer> logger) : BackgroundService
{
    private readonly TaskCompletionSource _declared = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes once the queue exists.</summary>
    public Task Declared => _declared.Task;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        string[] queues = [options.Value.JobQueue, options.Value.BatchJobQueue];
        var factory = new ConnectionFactory { Uri = new Uri(configuration.GetConnectionString("RabbitMq")!) };
        var delay = TimeSpan.FromSeconds(1);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = await factory.CreateConnectionAsync("llmserving-producer-topology", stoppingToken);
                await using var channel = await connection.CreateChannelAsync(cancellationToken: stoppingToken);
                foreach (var queue in queues)
                {
                    // Same shape as MassTransit's receive endpoint: durable fanout exchange -> durable queue.
                    await channel.ExchangeDeclareAsync(queue, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: stoppingToken);
                    await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false, cancellationToken: stoppingToken);
                    await channel.QueueBindAsync(queue, queue, routingKey: "", cancellationToken: stoppingToken);
                }

                logger.LogInformation("Declared job queues {Queues}", string.Join(", ", queues));
                _declared.TrySetResult();
                return;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Cannot declare job queues yet ({Error}); retrying in {Delay}", e.Message, delay);
                await Task.Delay(delay, stoppingToken);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
            }
        }
    }
}
