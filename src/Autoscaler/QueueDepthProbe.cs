using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace LlmServing.Autoscaler;

/// <summary>
/// Queue depth = ready + unacknowledged. Ready messages and consumers come from an AMQP passive declare (exact at
/// once: a first job is seen within one poll); unacknowledged ones only the management HTTP API knows (an AMQP-only
/// count would scale busy workers away), and its statistics are refreshed every <c>collect_statistics_interval</c>.
/// </summary>
public sealed class QueueDepthProbe(HttpClient http, IOptions<AutoscalerOptions> options) : IAsyncDisposable
{
    private IConnection? _connection;
    public async Task<QueueDepth> ReadAsync(CancellationToken ct)
    {
        var o = options.Value;
        var total = new QueueDepth(0, 0, 0);
        foreach (var queue in o.Queues)
        {
            total += await ReadAsync(queue, ct);
        }

        return total with { Ready = total.Ready + await BacklogAsync(ct) };
    }

    public async Task<QueueDepth> ReadAsync(string queue, CancellationToken ct)
    {
        var managed = await ReadManagementAsync(queue, ct);
        if (string.IsNullOrEmpty(options.Value.AmqpUrl))
        {
            return managed;
        }

        try
        {
            _connection ??= await new ConnectionFactory { Uri = new Uri(options.Value.AmqpUrl) }.CreateConnectionAsync(ct);
            await using var channel = await _connection.CreateChannelAsync(cancellationToken: ct);
            var ok = await channel.QueueDeclarePassiveAsync(queue, ct);
            return new QueueDepth(ok.MessageCount, managed.Unacknowledged, (int)ok.ConsumerCount);
        }
        catch (RabbitMQ.Client.Exceptions.OperationInterruptedException e) when (e.ShutdownReason?.ReplyCode == 404)
        {
            return managed;
        }
    }

    /// <summary>
    /// Batch lines waiting in PostgreSQL for their tenant's window (fair share, ADR 0007): ready work, though not in the
    /// broker yet (of the watched queues). Zero when no connection string is set or PostgreSQL does not answer (the broker's depth still scales).
    /// </summary>
    private async Task<long> BacklogAsync(CancellationToken ct)
    {
        if (string.IsNullOrEmpty(options.Value.BacklogConnectionString))
        {
            return 0;
        }

        try
        {
            _backlog ??= new Npgsql.NpgsqlDataSourceBuilder(options.Value.BacklogConnectionString).Build();
            // Only this deployment's lines: other deployments may share the database.
            await using var command = _backlog.CreateCommand(
                "SELECT count(*) FROM jobs WHERE status = 'queued' AND queued_at IS NULL AND batch_id IS NOT NULL AND queue = ANY($1)");
            command.Parameters.AddWithValue(options.Value.Queues);
            return (long)(await command.ExecuteScalarAsync(ct))!;
        }
        catch (Npgsql.NpgsqlException)
        {
            return 0;
        }
    }

    private Npgsql.NpgsqlDataSource? _backlog;

    public async ValueTask DisposeAsync()
    {
        if (_backlog is not null)
        {
            await _backlog.DisposeAsync();
        }

        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }

    private async Task<QueueDepth> ReadManagementAsync(string queue, CancellationToken ct)
    {
        var o = options.Value;
        var baseUri = new Uri(o.ManagementUrl);
        using var request = new HttpRequestMessage(HttpMethod.Get,
            new Uri(baseUri, $"api/queues/{Uri.EscapeDataString(o.VirtualHost)}/{Uri.EscapeDataString(queue)}"));
        if (baseUri.UserInfo.Length > 0)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Basic",
                Convert.ToBase64String(Encoding.UTF8.GetBytes(Uri.UnescapeDataString(baseUri.UserInfo))));
        }

        using var response = await http.SendAsync(request, ct);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return new QueueDepth(0, 0, 0); // not declared yet: nothing waits
        }

        response.EnsureSuccessStatusCode();
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync(ct));
        var root = json.RootElement;
        long Read(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;
        return new QueueDepth(Read("messages_ready"), Read("messages_unacknowledged"), (int)Read("consumers"));
    }
}
