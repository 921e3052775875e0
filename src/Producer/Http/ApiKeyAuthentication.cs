using System.Security.Cryptography;
using System.Text;
using LlmServing.ResultStore.Tenants;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http;

/// <summary>
/// API keys per tenant, <c>Authorization: Bearer</c>. Off while <c>Producer:AdminKey</c> is empty (one default tenant,
/// for a local quick start). On: every <c>/v1</c> call needs a key; a tenant key sees only its tenant's jobs, files and
/// batches (another tenant's id answers 404); the admin key only manages keys (<c>/v1/admin</c>). The documentation,
/// health and metrics endpoints stay open.
/// </summary>
public static class ApiKeyAuthentication
{
    private const string TenantItem = "llmserving.tenant";

    /// <summary>The tenant of the current request.</summary>
    public static string Tenant(this HttpContext context) =>
        context.Items[TenantItem] as string ?? LlmServing.ResultStore.Jobs.Tenants.Default;

    public static WebApplication UseApiKeys(this WebApplication app)
    {
        app.Use(async (context, next) =>
        {
            if (await AdmitAsync(context))
            {
                await next(context);
            }
        });
        return app;
    }

    /// <summary>Whether the request goes on; when not, the refusal has been written.</summary>
    private static async Task<bool> AdmitAsync(HttpContext context)
    {
        var admin = context.RequestServices.GetRequiredService<IOptions<ProducerOptions>>().Value.AdminKey;
        var adminPath = context.Request.Path.StartsWithSegments("/v1/admin");
        if (string.IsNullOrEmpty(admin) && adminPath)
        {
            // Without an admin key there is nobody to manage keys: a key minted now would still open the API
            // once keys are turned on.
            await Deny(context, StatusCodes.Status404NotFound, "Not found", "API keys are off: set Producer:AdminKey to manage them.");
            return false;
        }

        if (string.IsNullOrEmpty(admin) || !context.Request.Path.StartsWithSegments("/v1"))
        {
            return true;
        }

        var header = context.Request.Headers.Authorization.ToString();
        var key = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header[7..].Trim() : "";
        if (key.Length == 0)
        {
            await Deny(context, StatusCodes.Status401Unauthorized, "API key required", "Send 'Authorization: Bearer <API key>'.");
            return false;
        }

        if (CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(admin)))
        {
            if (!adminPath)
            {
                await Deny(context, StatusCodes.Status403Forbidden, "Admin key", "The admin key manages API keys only; use a tenant's key for jobs, files and batches.");
                return false;
            }

            return true;
        }

        if (adminPath)
        {
            await Deny(context, StatusCodes.Status403Forbidden, "Admin only", "Managing API keys needs the admin key.");
            return false;
        }

        return await TenantKeyAsync(context, key);
    }

    /// <summary>A tenant's key: its tenant becomes the request's; an unknown one counts against the address.</summary>
    private static async Task<bool> TenantKeyAsync(HttpContext context, string key)
    {
        // Unknown keys cost a database lookup each: an address that keeps sending them is refused for a while,
        // but only for keys that are not active ones (an ingress or NAT address is shared by many clients).
        var guard = context.RequestServices.GetRequiredService<InvalidKeyLimiter>();
        var address = context.Connection.RemoteIpAddress?.ToString() ?? "unknown";
        if (!await guard.MayLookUpAsync(address, key, context.RequestAborted))
        {
            context.Response.Headers.RetryAfter = "60";
            await Deny(context, StatusCodes.Status429TooManyRequests, "Too many invalid API keys",
                $"This address sent more than {InvalidKeyLimiter.PerMinute} unknown keys in a minute; retry later.");
            return false;
        }

        var tenant = await context.RequestServices.GetRequiredService<ApiKeyStore>().FindTenantAsync(key, context.RequestAborted);
        if (tenant is null)
        {
            guard.Count(address);
            await Deny(context, StatusCodes.Status401Unauthorized, "Invalid API key", "The API key is unknown or was revoked.");
            return false;
        }

        context.Items[TenantItem] = tenant;
        return true;
    }

    public static IEndpointRouteBuilder MapAdminApi(this IEndpointRouteBuilder app)
    {
        var admin = app.MapGroup("/v1/admin").WithTags("Admin");
        admin.MapPost("/keys", async (CreateKeyRequest request, ApiKeyStore keys, CancellationToken ct) =>
        {
            if (TenantIds.Problem(request.TenantId) is { } problem)
            {
                return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid tenant", $"'tenant_id': {problem}");
            }

            var (record, key) = await keys.CreateAsync(request.TenantId, ct);
            return Results.Created($"/v1/admin/keys/{record.Id}", new { id = record.Id, tenant_id = record.TenantId, key, prefix = record.Prefix, created_at = record.CreatedAt });
        }).WithSummary("Create an API key for a tenant (admin key; the key is shown once)");
        admin.MapDelete("/keys/{id:guid}", async (Guid id, ApiKeyStore keys, CancellationToken ct) =>
            await keys.RevokeAsync(id, ct)
                ? Results.NoContent()
                : Results.Problem(statusCode: StatusCodes.Status404NotFound, title: "Key not found", detail: $"There is no active key with id {id}."))
            .WithSummary("Revoke an API key (admin key)");
        return app;
    }

    private static Task Deny(HttpContext context, int status, string title, string detail) =>
        Results.Problem(statusCode: status, title: title, detail: detail).ExecuteAsync(context);
}

public sealed record CreateKeyRequest(string TenantId);
