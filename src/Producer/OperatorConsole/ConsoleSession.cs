using System.Security.Cryptography;
using System.Text;
using LlmServing.ResultStore.Tenants;
using Microsoft.Extensions.Options;

namespace LlmServing.Producer.OperatorConsole;

/// <summary>Who is looking at the console: the admin (every tenant), or one tenant through one of its keys.</summary>
/// <param name="TenantId">The tenant a tenant key sees; null for the admin.</param>
/// <param name="KeysOff">API keys are off (no admin key): a local deployment, open like the API.</param>
public sealed record ConsoleUser(bool IsAdmin, string? TenantId, Guid? KeyId, bool KeysOff)
{
    /// <summary>The tenant filter of every query: null (all tenants) for the admin.</summary>
    public string? Scope => IsAdmin ? null : TenantId;

    public static readonly ConsoleUser Open = new(true, null, null, true);
}

/// <summary>
/// The console's sign-in: the API key pasted once into the login form becomes a cookie that holds no key, only who
/// signed in (admin, or the key's id) and until when, signed with HMAC-SHA256 under a key derived from the admin key.
/// Every replica derives the same key, so no session store is needed; changing the admin key signs everyone out, and a
/// revoked tenant key ends its sessions at once (the key's id is checked on every request). The cookie is HttpOnly and
/// SameSite=Strict, and unsafe requests must come from the console's own origin, so another site cannot post to it.
/// </summary>
public sealed class ConsoleSession(IOptions<ProducerOptions> producer, IOptions<ConsoleOptions> options, ApiKeyStore keys, TimeProvider clock)
{
    public const string CookieName = "llmserving_console";
    private const string UserItem = "llmserving.console.user";

    public bool KeysOff => string.IsNullOrEmpty(producer.Value.AdminKey);

    /// <summary>The signed-in user of this request (set by the console's middleware), or null.</summary>
    public static ConsoleUser? Current(HttpContext http) => http.Items[UserItem] as ConsoleUser;

    /// <summary>Resolves the request's user from its cookie; null when not signed in (or the session is void).</summary>
    public async Task<ConsoleUser?> AuthenticateAsync(HttpContext http)
    {
        ConsoleUser? user;
        if (KeysOff)
        {
            user = ConsoleUser.Open;
        }
        else
        {
            user = await ReadCookieAsync(http.Request.Cookies[CookieName], http.RequestAborted);
        }

        if (user is not null)
        {
            http.Items[UserItem] = user;
        }

        return user;
    }

    /// <summary>Checks a pasted key; on success writes the session cookie. Returns the user, or null for a wrong key.</summary>
    /// <summary>Whether <paramref name="key"/> is the admin key (no database involved).</summary>
    public bool IsAdminKey(string key) =>
        !KeysOff && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(key.Trim()), Encoding.UTF8.GetBytes(producer.Value.AdminKey));

    public async Task<ConsoleUser?> SignInAsync(HttpContext http, string key, CancellationToken ct)
    {
        if (KeysOff || string.IsNullOrWhiteSpace(key))
        {
            return null;
        }

        key = key.Trim();
        string payload;
        ConsoleUser user;
        var expires = clock.GetUtcNow().Add(options.Value.SessionLifetime).ToUnixTimeSeconds();
        if (CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(producer.Value.AdminKey)))
        {
            payload = $"admin|{expires}";
            user = new ConsoleUser(true, null, null, false);
        }
        else if (await keys.FindActiveAsync(key, ct) is { } record)
        {
            payload = $"key|{record.Id:N}|{expires}";
            user = new ConsoleUser(false, record.TenantId, record.Id, false);
        }
        else
        {
            return null;
        }

        http.Response.Cookies.Append(CookieName, payload + "." + Sign(payload), new CookieOptions
        {
            HttpOnly = true,
            SameSite = SameSiteMode.Strict,
            Secure = http.Request.IsHttps,
            Path = "/console",
            MaxAge = options.Value.SessionLifetime,
        });
        return user;
    }

    public static void SignOut(HttpContext http) => http.Response.Cookies.Delete(CookieName, new CookieOptions { Path = "/console" });

    private async Task<ConsoleUser?> ReadCookieAsync(string? cookie, CancellationToken ct)
    {
        var dot = cookie?.LastIndexOf('.') ?? -1;
        if (dot <= 0)
        {
            return null;
        }

        var payload = cookie![..dot];
        if (!CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(cookie[(dot + 1)..]), Encoding.ASCII.GetBytes(Sign(payload))))
        {
            return null;
        }

        var parts = payload.Split('|');
        if (!long.TryParse(parts[^1], out var expires) || clock.GetUtcNow().ToUnixTimeSeconds() > expires)
        {
            return null;
        }

        if (parts is ["admin", _])
        {
            return new ConsoleUser(true, null, null, false);
        }

        if (parts is ["key", var id, _] && Guid.TryParseExact(id, "N", out var keyId)
            && await keys.FindActiveAsync(keyId, ct) is { } record)
        {
            return new ConsoleUser(false, record.TenantId, record.Id, false);
        }

        return null;
    }

    private string Sign(string payload)
    {
        var key = HKDF.DeriveKey(HashAlgorithmName.SHA256, Encoding.UTF8.GetBytes(producer.Value.AdminKey), 32,
            info: Encoding.ASCII.GetBytes("llmserving-console-session-v1"));
        return Convert.ToBase64String(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(payload))).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }
}
