using System.Diagnostics;
using Npgsql;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace LlmServing.Benchmarks;

/// <summary>
/// The raw limit of the plumbing on this machine, measured by the same harness: for each job, an Npgsql INSERT of a
/// row, a persistent RabbitMQ.Client publish with publisher confirms, and a consumer (manual acks, prefetch 64) that
/// updates the row to running and then to succeeded before acknowledging. No HTTP, no EF Core, no MassTransit.
/// </summary>
public static class RawPlumbingBenchmark
{
    public static async Task<double> JobsPerSecondAsync(BenchServices services, int jobs, int concurrency)
    {
        var queue = $"llm-raw-bench-{Guid.NewGuid():N}"[..24];
        await using (var db = new NpgsqlConnection(services.Postgres))
        {
            await db.OpenAsync();
            await using var create = new NpgsqlCommand("""
                CREATE TABLE IF NOT EXISTS bench_raw (id uuid PRIMARY KEY, status text NOT NULL, request jsonb NOT NULL,
                  created_at timestamptz NOT NULL, started_at timestamptz, finished_at timestamptz, attempts int NOT NULL DEFAULT 0)
                """, db);
            await create.ExecuteNonQueryAsync();
        }

        // The consumer handles up to 64 deliveries at once, like the worker with 64 slots.
        var factory = new ConnectionFactory { Uri = new Uri(services.RabbitMq), ConsumerDispatchConcurrency = 64 };
        await using var connection = await factory.CreateConnectionAsync();
        await using (var setup = await connection.CreateChannelAsync())
        {
            await setup.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false);
        }

        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var finished = 0;
        await using var consumerChannel = await connection.CreateChannelAsync();
        await consumerChannel.BasicQosAsync(0, 64, false);
        var consumer = new AsyncEventingBasicConsumer(consumerChannel);
        NpgsqlConnection.ClearAllPools(); // the end-to-end runs leave idle pooled connections behind
        var dataSource = new NpgsqlDataSourceBuilder(services.Postgres) { ConnectionStringBuilder = { MaxPoolSize = 40 } }.Build();
        consumer.ReceivedAsync += async (_, delivery) =>
        {
            var id = new Guid(delivery.Body.Span);
            await using (var claim = dataSource.CreateCommand("UPDATE bench_raw SET status='running', started_at=now(), attempts=attempts+1 WHERE id=$1 AND status IN ('queued','running')"))
            {
                claim.Parameters.AddWithValue(id);
                await claim.ExecuteNonQueryAsync();
            }

            await using (var complete = dataSource.CreateCommand("UPDATE bench_raw SET status='succeeded', finished_at=now() WHERE id=$1 AND status='running'"))
            {
                complete.Parameters.AddWithValue(id);
                await complete.ExecuteNonQueryAsync();
            }

            await consumerChannel.BasicAckAsync(delivery.DeliveryTag, false);
            if (Interlocked.Increment(ref finished) == jobs)
            {
                done.TrySetResult();
            }
        };
        await consumerChannel.BasicConsumeAsync(queue, autoAck: false, consumer);

        var clock = Stopwatch.StartNew();
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
        {
            await using var channel = await connection.CreateChannelAsync(new CreateChannelOptions(
                publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
            var properties = new BasicProperties { Persistent = true };
            while (Interlocked.Increment(ref next) < jobs)
            {
                var id = Guid.CreateVersion7();
                await using (var insert = dataSource.CreateCommand("INSERT INTO bench_raw (id, status, request, created_at) VALUES ($1, 'queued', $2::jsonb, now())"))
                {
                    insert.Parameters.AddWithValue(id);
                    insert.Parameters.AddWithValue("""{"prompt":"bench","max_tokens":16}""");
                    await insert.ExecuteNonQueryAsync();
                }

                await channel.BasicPublishAsync("", queue, mandatory: false, properties, id.ToByteArray());
            }
        }));
        await done.Task.WaitAsync(TimeSpan.FromMinutes(5));
        clock.Stop();
        await dataSource.DisposeAsync();
        await services.DeleteQueueAsync(queue);
        return jobs / clock.Elapsed.TotalSeconds;
    }
}
