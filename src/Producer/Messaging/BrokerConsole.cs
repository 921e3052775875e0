using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace LlmServing.Producer.Messaging;

/// <summary>A lane's queue as the broker sees it. <see cref="Unacknowledged"/> is null without the management API.</summary>
public sealed record LaneDepth(string Lane, string Queue, long Ready, long? Unacknowledged, long Consumers, long DeadLetters);

/// <summary>A message MassTransit moved to an <c>_error</c> queue, with the reason it recorded in the headers.</summary>
public sealed record DeadLetter(
    string Queue, string MessageId, Guid? JobId, string? Reason, string? ExceptionType, string? FailedAt, string? Host, int Bytes);

/// <summary>
/// The broker side of the console: depth of each lane's queue and its error queue, and the dead letters in the error
/// queues. Listing a dead letter takes it without acknowledging and returns it (so a listing never loses one); taking
/// one (replay or discard) acknowledges only that message and returns the others it passed.
/// </summary>
public sealed class BrokerConsole(
    IConfiguration configuration,
    IOptions<ProducerOptions> producer,
    IOptions<ConsoleOptions> options,
    IHttpClientFactory http,
    ILogger<BrokerConsole> logger) : IAsyncDisposable
{
    private readonly SemaphoreSlim _connect = new(1, 1);
    private IConnection? _connection;

    /// <summary>The lanes: interactive jobs and batch lines, each with its queue.</summary>
    public IReadOnlyList<(string Lane, string Queue)> Lanes =>
        [("interactive", producer.Value.JobQueue), ("batch", producer.Value.BatchJobQueue)];

    /// <summary>The error queues dead letters may be in (the only queues the console reads).</summary>
    public IReadOnlyList<string> ErrorQueues => Lanes.Select(l => l.Queue + "_error").ToList();

    public async Task<IReadOnlyList<LaneDepth>> DepthsAsync(CancellationToken ct)
    {
        var result = new List<LaneDepth>();
        foreach (var (lane, queue) in Lanes)
        {
            var (ready, consumers) = await PassiveAsync(queue, ct) ?? (0, 0);
            var (errors, _) = await PassiveAsync(queue + "_error", ct) ?? (0, 0);
            result.Add(new LaneDepth(lane, queue, ready, await UnacknowledgedAsync(queue, ct), consumers, errors));
        }

        return result;
    }

    /// <summary>Up to <see cref="ConsoleOptions.MaxDeadLetters"/> dead letters of an error queue, oldest first.</summary>
    public async Task<IReadOnlyList<DeadLetter>> PeekAsync(string errorQueue, CancellationToken ct)
    {
        EnsureErrorQueue(errorQueue);
        var letters = new List<DeadLetter>();
        await using var channel = await ChannelAsync(ct);
        if (channel is null || await PassiveAsync(errorQueue, ct) is null)
        {
            return letters;
        }

        ulong last = 0;
        try
        {
            while (letters.Count < options.Value.MaxDeadLetters && await channel.BasicGetAsync(errorQueue, autoAck: false, ct) is { } got)
            {
                last = got.DeliveryTag;
                letters.Add(Describe(errorQueue, got));
            }
        }
        finally
        {
            if (last > 0)
            {
                await channel.BasicNackAsync(last, multiple: true, requeue: true, CancellationToken.None);
            }
        }

        return letters;
    }

    /// <summary>
    /// Finds dead letter <paramref name="messageId"/> and asks <paramref name="decide"/> about it: true acknowledges it
    /// (it leaves the error queue), false leaves it there. Returns null when it is not in the queue (any more).
    /// </summary>
    public async Task<(DeadLetter Letter, bool Taken)?> TakeAsync(string errorQueue, string messageId, Func<DeadLetter, Task<bool>> decide, CancellationToken ct)
    {
        EnsureErrorQueue(errorQueue);
        await using var channel = await ChannelAsync(ct);
        if (channel is null || await PassiveAsync(errorQueue, ct) is null)
        {
            return null;
        }

        var passed = new List<ulong>();
        try
        {
            while (await channel.BasicGetAsync(errorQueue, autoAck: false, ct) is { } got)
            {
                var letter = Describe(errorQueue, got);
                if (letter.MessageId != messageId)
                {
                    passed.Add(got.DeliveryTag);
                    continue;
                }

                var take = await decide(letter);
                if (take)
                {
                    await channel.BasicAckAsync(got.DeliveryTag, multiple: false, CancellationToken.None);
                }
                else
                {
                    passed.Add(got.DeliveryTag);
                }

                return (letter, take);
            }

            return null;
        }
        finally
        {
            foreach (var tag in passed)
            {
                await channel.BasicNackAsync(tag, multiple: false, requeue: true, CancellationToken.None);
            }
        }
    }

    private void EnsureErrorQueue(string errorQueue)
    {
        if (!ErrorQueues.Contains(errorQueue))
        {
            throw new ArgumentException($"'{errorQueue}' is not an error queue of this deployment.", nameof(errorQueue));
        }
    }

    private static DeadLetter Describe(string queue, BasicGetResult got)
    {
        var headers = got.BasicProperties.Headers;
        string? Header(string name) => headers is not null && headers.TryGetValue(name, out var value)
            ? value switch { byte[] bytes => Encoding.UTF8.GetString(bytes), null => null, _ => value.ToString() }
            : null;
        Guid? jobId = null;
        try
        {
            using var body = JsonDocument.Parse(got.Body);
            if (body.RootElement.TryGetProperty("message", out var message) && message.TryGetProperty("jobId", out var id)
                && id.TryGetGuid(out var parsed))
            {
                jobId = parsed;
            }
        }
        catch (JsonException)
        {
            // Not a MassTransit envelope: shown without a job.
        }

        var messageId = got.BasicProperties.MessageId ?? $"delivery-{got.DeliveryTag}";
        return new DeadLetter(queue, messageId, jobId, Header("MT-Fault-Message") ?? Header("MT-Reason"), Header("MT-Fault-ExceptionType"),
            Header("MT-Fault-Timestamp"), Header("MT-Host-MachineName"), got.Body.Length);
    }

    /// <summary>A queue's ready messages and consumers; null when it does not exist (nothing ever failed there) or the broker does not answer.</summary>
    private async Task<(long Messages, long Consumers)?> PassiveAsync(string queue, CancellationToken ct)
    {
        await using var channel = await ChannelAsync(ct);
        if (channel is null)
        {
            return null;
        }

        try
        {
            var ok = await channel.QueueDeclarePassiveAsync(queue, ct);
            return (ok.MessageCount, ok.ConsumerCount);
        }
        catch (RabbitMQ.Client.Exceptions.OperationInterruptedException e) when (e.ShutdownReason?.ReplyCode == 404)
        {
            return null;
        }
    }

    private async Task<long?> UnacknowledgedAsync(string queue, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(options.Value.ManagementUrl))
        {
            return null;
        }

        try
        {
            var baseUri = new Uri(options.Value.ManagementUrl);
            using var request = new HttpRequestMessage(HttpMethod.Get,
                new Uri(baseUri, $"api/queues/{Uri.EscapeDataString(options.Value.VirtualHost)}/{Uri.EscapeDataString(queue)}?columns=messages_unacknowledged"));
            if (!string.IsNullOrEmpty(baseUri.UserInfo))
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Basic",
                    Convert.ToBase64String(Encoding.UTF8.GetBytes(Uri.UnescapeDataString(baseUri.UserInfo))));
            }

            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(2));
            using var response = await http.CreateClient(nameof(BrokerConsole)).SendAsync(request, timeout.Token);
            if (!response.IsSuccessStatusCode)
            {
                return null;
            }

            using var json = JsonDocument.Parse(await response.Content.ReadAsStreamAsync(timeout.Token));
            // A queue the management API has no statistics for yet answers without the field (or, briefly after it was
            // declared, not as one queue's object): unknown, not zero.
            return json.RootElement.ValueKind == JsonValueKind.Object
                   && json.RootElement.TryGetProperty("messages_unacknowledged", out var value) && value.ValueKind == JsonValueKind.Number
                ? value.GetInt64()
                : null;
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or JsonException && !ct.IsCancellationRequested)
        {
            logger.LogDebug("RabbitMQ management API unavailable: {Error}", e.Message);
            return null;
        }
    }

    /// <summary>A channel on the console's shared connection; null while the broker does not answer.</summary>
    private async Task<IChannel?> ChannelAsync(CancellationToken ct)
    {
        try
        {
            await _connect.WaitAsync(ct);
            try
            {
                if (_connection is not { IsOpen: true })
                {
                    if (_connection is not null)
                    {
                        await _connection.DisposeAsync();
                    }

                    _connection = await new ConnectionFactory { Uri = new Uri(configuration.GetConnectionString("RabbitMq")!) }
                        .CreateConnectionAsync("llmserving-console", ct);
                }
            }
            finally
            {
                _connect.Release();
            }

            return await _connection.CreateChannelAsync(cancellationToken: ct);
        }
        catch (Exception e) when (e is RabbitMQ.Client.Exceptions.BrokerUnreachableException or RabbitMQ.Client.Exceptions.AlreadyClosedException)
        {
            logger.LogWarning("Console cannot reach RabbitMQ: {Error}", e.Message);
            return null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }
}
