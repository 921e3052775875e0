using System.Text.Json.Nodes;
using LlmServing.ResultStore.Webhooks;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http;

/// <summary>
/// <c>/v1/webhooks</c>: a tenant's default target, its signing secret (issued and shown once) and the delivery log.
/// </summary>
public static class WebhooksApi
{
    public static IEndpointRouteBuilder MapWebhooksApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/webhooks").WithTags("Webhooks");
        group.MapGet("", GetAsync).WithSummary("The tenant's default webhook target, and whether a signing secret exists");
        group.MapPut("", SetAsync)
            .WithSummary("Set the default target")
            .WithDescription("`{\"url\": \"https://...\"}`, or `{\"url\": null}` to clear it. Final states of the tenant's jobs " +
                             "(not batch lines) and batches go there unless the job or batch names its own `webhook_url`.")
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);
        group.MapPost("/secret", IssueSecretAsync)
            .WithSummary("Issue a new signing secret")
            .WithDescription("Returns the Standard Webhooks secret (`whsec_...`) once; it replaces any earlier one for the next delivery attempts.");
        group.MapGet("/deliveries", ListAsync)
            .WithSummary("Webhook deliveries, newest first")
            .WithDescription("`subject_id` (a job id or batch id) narrows them; each shows its status, attempts and last answer.");
        return app;
    }

    private static async Task<IResult> GetAsync(HttpContext http, WebhookStore store, CancellationToken ct)
    {
        var settings = await store.FindSettingsAsync(http.Tenant(), ct);
        return TypedResults.Ok(new JsonObject { ["url"] = settings?.Url, ["has_secret"] = settings?.Secret is not null });
    }

    private static async Task<IResult> SetAsync(HttpContext http, WebhookStore store, WebhookTargetPolicy policy, CancellationToken ct)
    {
        JsonObject? body;
        try
        {
            var bytes = await RequestBodies.ReadLimitedAsync(http.Request.Body, 8192, ct);
            if (bytes is not null && TextInput.FirstUnstorable(bytes) is var (field, unstorable))
            {
                return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid character", $"'{field}' {unstorable}");
            }

            body = bytes is null ? null : RequestBodies.ParseObject(bytes);
        }
        catch (System.Text.Json.JsonException)
        {
            body = null;
        }

        if (body is null || !body.ContainsKey("url") || body["url"] is { } u && u.GetValueKind() != System.Text.Json.JsonValueKind.String)
        {
            return Problems.Of(StatusCodes.Status400BadRequest, "Malformed request", "Send {\"url\": \"https://...\"} or {\"url\": null}.");
        }

        var url = body["url"]?.GetValue<string>();
        if (url is not null && await WebhookTargets.CheckTargetAsync(url, http.Tenant(), policy, store, ct) is { } problem)
        {
            return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid webhook target", problem);
        }

        await store.SetDefaultUrlAsync(http.Tenant(), url, ct);
        return TypedResults.Ok(new JsonObject { ["url"] = url });
    }

    private static async Task<IResult> IssueSecretAsync(HttpContext http, WebhookStore store, CancellationToken ct) =>
        TypedResults.Ok(new JsonObject { ["secret"] = await store.IssueSecretAsync(http.Tenant(), ct) });

    private static async Task<IResult> ListAsync(HttpContext http, WebhookStore store, string? subject_id, int? limit, CancellationToken ct)
    {
        var page = await store.ListAsync(http.Tenant(), subject_id, Math.Clamp(limit ?? 20, 1, 100), ct);
        var data = new JsonArray();
        foreach (var d in page)
        {
            data.Add(new JsonObject
            {
                ["id"] = WebhookTargets.MessageId(d.Id),
                ["type"] = d.EventType,
                ["subject_id"] = d.SubjectId,
                ["url"] = d.Url,
                ["status"] = d.Status,
                ["attempts"] = d.Attempts,
                ["last_status_code"] = d.LastStatusCode,
                ["last_error"] = d.LastError,
                ["created_at"] = d.CreatedAt.ToUnixTimeSeconds(),
                ["last_attempt_at"] = d.LastAttemptAt?.ToUnixTimeSeconds(),
                ["next_attempt_at"] = d.Status == WebhookDeliveryStatuses.Pending ? d.NextAttemptAt.ToUnixTimeSeconds() : null,
                ["delivered_at"] = d.DeliveredAt?.ToUnixTimeSeconds(),
            });
        }

        return TypedResults.Ok(new JsonObject { ["object"] = "list", ["data"] = data });
    }
}
