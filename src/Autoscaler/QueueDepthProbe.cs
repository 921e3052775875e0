using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Options;

namespace LlmServing.Autoscaler;

/// <summary>
/// Reads queue depth from the RabbitMQ management HTTP API: <c>messages_ready</c> + <c>messages_unacknowledged</c>
/// (an AMQP passive declare reports only ready messages, which would scale busy workers away) and <c>consumers</c>.
/// </summary>
public sealed class QueueDepthProbe(HttpClient http, IOptions<AutoscalerOptions> options)
{
    public async Task<QueueDepth> ReadAsync(CancellationToken ct)
    {
        var o = options.Value;
        var total = new QueueDepth(0, 0, 0);
        foreach (var queue in o.Queues)
        {
            total += await ReadAsync(queue, ct);
        }

        return total;
    }

    public async Task<QueueDepth> ReadAsync(string queue, CancellationToken ct)
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
