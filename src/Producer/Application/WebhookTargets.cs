using LlmServing.ResultStore.Webhooks;
using System.Net;
using System.Net.Sockets;

namespace LlmServing.Producer.Application;

/// <summary>Options of section <c>Webhooks</c>.</summary>
public sealed class WebhookOptions
{
    public const string Section = "Webhooks";

    /// <summary>
    /// Allow targets on loopback, private, link-local and other non-public addresses. Off by default: a tenant could
    /// otherwise make the Producer call into its own network. Tests and internal deployments turn it on.
    /// </summary>
    public bool AllowPrivateTargets { get; set; }

    /// <summary>One attempt's limit, connection and response together.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Failed attempts are retried, with exponential backoff, until this long after the event.</summary>
    public TimeSpan RetryFor { get; set; } = TimeSpan.FromHours(25);

    /// <summary>Wait before the second attempt; doubled each time up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan FirstRetryDelay { get; set; } = TimeSpan.FromSeconds(5);

    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How often the sender and the event dispatcher look for work when there was none.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Deliveries attempted at once by one Producer; a freed place is taken by the next due delivery at once.</summary>
    public int Concurrency { get; set; } = 16;

    /// <summary>
    /// Deliveries attempted at once to one target (scheme, host and port), so that a target that never answers holds
    /// only these places and delays only its own deliveries.
    /// </summary>
    public int ConcurrencyPerTarget { get; set; } = 4;

    /// <summary>The wait before attempt <paramref name="attempt"/> + 1 after attempt <paramref name="attempt"/> failed (1-based), with ±20% jitter.</summary>
    public TimeSpan RetryDelay(int attempt)
    {
        var seconds = FirstRetryDelay.TotalSeconds * Math.Pow(2, Math.Min(attempt - 1, 30));
        var capped = Math.Min(seconds, MaxRetryDelay.TotalSeconds);
        return TimeSpan.FromSeconds(capped * (0.8 + (Random.Shared.NextDouble() * 0.4)));
    }
}

/// <summary>Resolves a target's host name. A seam: tests answer with addresses of their choosing and open no connection.</summary>
public interface IWebhookHostResolver
{
    Task<IPAddress[]> ResolveAsync(string host, CancellationToken ct);
}

public sealed class DnsWebhookHostResolver : IWebhookHostResolver
{
    public Task<IPAddress[]> ResolveAsync(string host, CancellationToken ct) => Dns.GetHostAddressesAsync(host, ct);
}

/// <summary>
/// Which webhook targets are allowed: absolute http(s) URLs without credentials, whose every address is public,
/// unless <see cref="WebhookOptions.AllowPrivateTargets"/>. Checked when a target is given and again, on the
/// addresses actually connected to, at each delivery (a name may resolve elsewhere later).
/// </summary>
public sealed class WebhookTargetPolicy(IWebhookHostResolver resolver, Microsoft.Extensions.Options.IOptions<WebhookOptions> options)
{
    public const int MaxUrlLength = 2048;

    /// <summary>Null when <paramref name="url"/> may receive webhooks; otherwise why not.</summary>
    public async Task<string?> CheckAsync(string url, CancellationToken ct)
    {
        if (url.Length > MaxUrlLength)
        {
            return $"'webhook_url' is longer than {MaxUrlLength} characters.";
        }

        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
        {
            return "'webhook_url' must be an absolute http:// or https:// URL.";
        }

        if (uri.UserInfo.Length > 0)
        {
            return "'webhook_url' must not hold credentials; deliveries are signed instead.";
        }

        if (options.Value.AllowPrivateTargets)
        {
            return null;
        }

        IPAddress[] addresses;
        if (IPAddress.TryParse(uri.IdnHost, out var literal))
        {
            addresses = [literal];
        }
        else
        {
            try
            {
                addresses = await resolver.ResolveAsync(uri.IdnHost, ct);
            }
            catch (SocketException)
            {
                return $"'webhook_url': the host '{uri.Host}' does not resolve.";
            }
        }

        if (addresses.Length == 0)
        {
            return $"'webhook_url': the host '{uri.Host}' does not resolve.";
        }

        return addresses.FirstOrDefault(a => !IsPublic(a)) is { } inner
            ? $"'webhook_url' points to a non-public address ({inner}): loopback, private, link-local and similar targets are refused."
            : null;
    }

    /// <summary>Whether an address is on the public internet (not loopback, private, link-local, CGNAT, multicast, ...).</summary>
    public static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = address.GetAddressBytes();
            return !(b[0] == 0 // "this" network
                     || b[0] == 10
                     || b[0] == 127
                     || (b[0] == 100 && b[1] >= 64 && b[1] <= 127) // carrier-grade NAT
                     || (b[0] == 169 && b[1] == 254) // link-local, cloud metadata
                     || (b[0] == 172 && b[1] >= 16 && b[1] <= 31)
                     || (b[0] == 192 && b[1] == 168)
                     || (b[0] == 192 && b[1] == 0 && b[2] == 0) // IETF protocol assignments
                     || (b[0] == 198 && (b[1] == 18 || b[1] == 19)) // benchmarking
                     || b[0] >= 224); // multicast, reserved, broadcast
        }

        if (address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            var b = address.GetAddressBytes();
            return !(IPAddress.IsLoopback(address)
                     || address.Equals(IPAddress.IPv6None) // ::
                     || address.IsIPv6LinkLocal
                     || address.IsIPv6SiteLocal
                     || address.IsIPv6Multicast
                     || (b[0] & 0xFE) == 0xFC // unique local fc00::/7
                     || (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8) // documentation
                     || (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B)); // NAT64 reaches IPv4 inside
        }

        return false;
    }
}

/// <summary>The webhook rules every surface shares: whether a URL can be a tenant's target, and a delivery's message id.</summary>
public static class WebhookTargets
{
    /// <summary>Null when <paramref name="url"/> can be a target of <paramref name="tenantId"/>'s webhooks; otherwise why not.</summary>
    public static async Task<string?> CheckTargetAsync(string url, string tenantId, WebhookTargetPolicy policy, WebhookStore store, CancellationToken ct)
    {
        if (TextInput.HasNul(url))
        {
            return "'webhook_url' " + TextInput.Problem(url);
        }

        if (await policy.CheckAsync(url, ct) is { } problem)
        {
            return problem;
        }

        return await store.FindSettingsAsync(tenantId, ct) is { Secret: not null }
            ? null
            : "Webhooks are signed: issue this tenant's signing secret first (POST /v1/webhooks/secret).";
    }

    /// <summary>The <c>webhook-id</c> of a delivery: the same on every attempt.</summary>
    public static string MessageId(Guid deliveryId) => $"msg_{deliveryId:N}";
}
