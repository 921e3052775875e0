using System.Net;
using System.Net.Sockets;
using System.Text;
using LlmServing.ResultStore.Webhooks;
using Microsoft.Extensions.Options;
using StandardWebhooks;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Background;

/// <summary>
/// Delivers webhooks: claims due deliveries from PostgreSQL (any replica may), signs each with the tenant's secret
/// (Standard Webhooks: <c>webhook-id</c>, <c>webhook-timestamp</c>, <c>webhook-signature</c>, HMAC-SHA256) and posts
/// it. A 2xx ends it; anything else is retried with exponential backoff until <see cref="WebhookOptions.RetryFor"/>
/// after the event. Connections go only to addresses the target policy allows, checked on the resolved address at
/// connect time. Logs never hold a secret or a body.
/// </summary>
public sealed class WebhookSender : BackgroundService
{
    private readonly WebhookStore _store;
    private readonly WebhookOptions _options;
    private readonly TimeProvider _clock;
    private readonly ILogger<WebhookSender> _logger;
    private readonly HttpClient _http;

    public WebhookSender(WebhookStore store, IOptions<WebhookOptions> options, IWebhookHostResolver resolver, TimeProvider clock, ILogger<WebhookSender> logger)
    {
        _store = store;
        _options = options.Value;
        _clock = clock;
        _logger = logger;
        var allowPrivate = _options.AllowPrivateTargets;
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false, // a redirect could lead anywhere: the target answers, or the attempt failed
            UseProxy = false,
            ConnectTimeout = _options.Timeout,
            PooledConnectionLifetime = TimeSpan.FromMinutes(2),
            ConnectCallback = async (context, ct) =>
            {
                var host = context.DnsEndPoint.Host;
                var addresses = IPAddress.TryParse(host, out var literal) ? [literal] : await resolver.ResolveAsync(host, ct);
                var allowed = addresses.Where(a => allowPrivate || WebhookTargetPolicy.IsPublic(a)).ToArray();
                if (allowed.Length == 0)
                {
                    throw new HttpRequestException($"The webhook host '{host}' resolves to no allowed address.");
                }

                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(allowed, context.DnsEndPoint.Port, ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        _http = new HttpClient(handler) { Timeout = _options.Timeout };
    }

    /// <summary>
    /// A sliding window, not rounds: up to <see cref="WebhookOptions.Concurrency"/> attempts in flight, at most
    /// <see cref="WebhookOptions.ConcurrencyPerTarget"/> per target; a place freed by one attempt is filled at once, and
    /// targets already at their limit are left out of the next claim. One target that never answers delays only its
    /// own deliveries.
    /// </summary>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var inFlight = new Dictionary<Task, string>();
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                foreach (var done in inFlight.Keys.Where(t => t.IsCompleted).ToList())
                {
                    inFlight.Remove(done);
                }

                var claimed = 0;
                var free = _options.Concurrency - inFlight.Count;
                if (free > 0)
                {
                    var perTarget = inFlight.Values.GroupBy(t => t).ToDictionary(g => g.Key, g => g.Count());
                    try
                    {
                        var due = await _store.ClaimDueAsync(free, _options.Timeout * 3, perTarget, _options.ConcurrencyPerTarget, stoppingToken);
                        claimed = due.Count;
                        foreach (var delivery in due)
                        {
                            inFlight[RunAsync(delivery, stoppingToken)] = WebhookStore.Target(delivery.Url);
                        }
                    }
                    catch (Exception e) when (!stoppingToken.IsCancellationRequested)
                    {
                        _logger.LogWarning(e, "Claiming webhook deliveries failed; retrying");
                    }
                }

                if (claimed == 0 || inFlight.Count >= _options.Concurrency)
                {
                    // Until an attempt ends (a place frees) or the poll interval passes (new deliveries may be due).
                    var poll = Task.Delay(_options.PollInterval, _clock, stoppingToken);
                    await Task.WhenAny(inFlight.Keys.Append(poll)).ContinueWith(_ => { }, TaskScheduler.Default);
                }
            }
        }
        finally
        {
            await Task.WhenAll(inFlight.Keys).ContinueWith(_ => { }, TaskScheduler.Default);
        }
    }

    private async Task RunAsync(DueWebhook delivery, CancellationToken ct)
    {
        try
        {
            await AttemptAsync(delivery, ct);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            // Recording the attempt failed (the database is away): the claim's lease runs out and it is tried again.
            _logger.LogWarning(e, "Recording webhook {DeliveryId} failed; it is retried when its claim expires", delivery.Id);
        }
    }

    private async Task AttemptAsync(DueWebhook delivery, CancellationToken ct)
    {
        int? status = null;
        string? error;
        try
        {
            if (delivery.Secret is null)
            {
                throw new InvalidOperationException("The tenant has no signing secret.");
            }

            var id = WebhookTargets.MessageId(delivery.Id);
            var now = _clock.GetUtcNow();
            using var request = new HttpRequestMessage(HttpMethod.Post, delivery.Url)
            {
                Content = new StringContent(delivery.Payload, Encoding.UTF8, "application/json"),
            };
            request.Headers.Add("webhook-id", id);
            request.Headers.Add("webhook-timestamp", now.ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture));
            request.Headers.Add("webhook-signature", new StandardWebhook(delivery.Secret).Sign(id, now, delivery.Payload));
            request.Headers.UserAgent.ParseAdd("LlmServing-Webhooks/1.0");
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
            status = (int)response.StatusCode;
            if (response.IsSuccessStatusCode)
            {
                await _store.RecordAttemptAsync(delivery.Id, delivered: true, status, null, null, ct);
                _logger.LogInformation("Webhook {DeliveryId} ({EventType}) delivered to {Host}: {Status}",
                    delivery.Id, delivery.EventType, Host(delivery.Url), status);
                return;
            }

            error = $"HTTP {status}";
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            error = e is TaskCanceledException ? $"No answer within {_options.Timeout.TotalSeconds:0.#} s." : e.Message;
        }

        var attempt = delivery.Attempts + 1;
        var next = _clock.GetUtcNow() + _options.RetryDelay(attempt);
        var giveUp = next > delivery.CreatedAt + _options.RetryFor;
        await _store.RecordAttemptAsync(delivery.Id, delivered: false, status, error, giveUp ? null : next, ct);
        _logger.LogWarning("Webhook {DeliveryId} ({EventType}) to {Host} failed (attempt {Attempt}: {Error}); {Outcome}",
            delivery.Id, delivery.EventType, Host(delivery.Url), attempt, error, giveUp ? "giving up" : $"retrying at {next:O}");
    }

    private static string Host(string url) => Uri.TryCreate(url, UriKind.Absolute, out var uri) ? uri.Host : "?";

    public override void Dispose()
    {
        _http.Dispose();
        base.Dispose();
    }
}
