using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace LlmServing.Tests.Infrastructure;

/// <summary>Clients of tenants of their own (API keys on): tests with short limits or retentions touch no other test's rows.</summary>
public static class TenantClients
{
    /// <summary>A client that sends <paramref name="key"/> (the admin key, or a tenant's).</summary>
    public static HttpClient WithKey(Uri baseAddress, string key)
    {
        var client = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromMinutes(2) };
        client.DefaultRequestHeaders.Authorization = new("Bearer", key);
        return client;
    }

    /// <summary>Mints a key for <paramref name="tenantId"/> with this admin client and returns a client that sends it.</summary>
    public static async Task<HttpClient> TenantAsync(this HttpClient admin, string tenantId)
    {
        using var created = await admin.PostAsJsonAsync("/v1/admin/keys", new { tenant_id = tenantId });
        var text = await created.Content.ReadAsStringAsync();
        Assert.That((int)created.StatusCode, Is.EqualTo(201), text);
        return WithKey(admin.BaseAddress!, JsonNode.Parse(text)!["key"]!.GetValue<string>());
    }
}
