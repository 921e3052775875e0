using System.Collections.Concurrent;
using LlmServing.ResultStore.Retention;
using LlmServing.ResultStore.Tenants;
using Prometheus;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http;

/// <summary>
/// <c>GET /v1/usage</c> (the caller's tenant) and <c>GET /v1/admin/usage</c> (every tenant): final jobs and tokens per
/// tenant and day, whether the jobs are still stored or were deleted by retention. Plus the admin's per-tenant
/// settings (<c>/v1/admin/tenants/{tenant}/settings</c>).
/// </summary>
public static class UsageApi
{
    public static IEndpointRouteBuilder MapUsageApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/usage", (HttpContext http, RetentionStore store, string? start_date, string? end_date, CancellationToken ct) =>
                UsageAsync(store, http.Tenant(), start_date, end_date, ct))
            .WithTags("Usage")
            .WithSummary("This tenant's usage per day: jobs, prompt, completion and cached tokens")
            .WithDescription("`start_date` and `end_date` (YYYY-MM-DD, UTC, inclusive); the last 30 days by default.");
        app.MapGet("/v1/admin/usage", (RetentionStore store, string? start_date, string? end_date, CancellationToken ct) =>
                UsageAsync(store, null, start_date, end_date, ct))
            .WithTags("Admin")
            .WithSummary("Every tenant's usage per day (admin key)");
        app.MapGet("/v1/admin/tenants/{tenant}/settings", async (string tenant, TenantSettingsStore settings, CancellationToken ct) =>
                TypedResults.Ok(Shape(tenant, await settings.FindAsync(tenant, ct))))
            .WithTags("Admin")
            .WithSummary("A tenant's overrides (null: the deployment's default)");
        app.MapPut("/v1/admin/tenants/{tenant}/settings", SetSettingsAsync)
            .WithTags("Admin")
            .WithSummary("Set a tenant's overrides")
            .WithDescription("`{\"job_retention_days\": 90, \"max_enqueued_tokens\": 5000000}`; null or absent: the deployment's default; " +
                             "`max_enqueued_tokens: 0`: no limit.");
        return app;
    }

    public sealed record SettingsRequest(int? JobRetentionDays, long? MaxEnqueuedTokens);

    private static async Task<IResult> SetSettingsAsync(string tenant, SettingsRequest request, TenantSettingsStore settings, CancellationToken ct)
    {
        if (TenantIds.Problem(tenant) is { } problem)
        {
            return Problems.Of(StatusCodes.Status400BadRequest, "Invalid tenant", problem);
        }

        if (!TenantSettingsRule.IsValid(request.JobRetentionDays, request.MaxEnqueuedTokens))
        {
            return Problems.Of(StatusCodes.Status422UnprocessableEntity, "Invalid settings",
                "'job_retention_days' is 1 to 3650; 'max_enqueued_tokens' is 0 (no limit) or more.");
        }

        var row = await settings.SetAsync(tenant, request.JobRetentionDays * 86_400, request.MaxEnqueuedTokens, ct);
        return TypedResults.Ok(Shape(tenant, row));
    }

    private static object Shape(string tenant, TenantSettings? s) => new
    {
        tenant_id = tenant,
        job_retention_days = s?.JobRetentionSeconds / 86_400,
        max_enqueued_tokens = s?.MaxEnqueuedTokens,
    };

    private static async Task<IResult> UsageAsync(RetentionStore store, string? tenant, string? start, string? end, CancellationToken ct)
    {
        var today = DateOnly.FromDateTime(DateTime.UtcNow);
        if (!TryDate(end, today, out var to) || !TryDate(start, to.DayNumber >= MinDate.DayNumber + 29 ? to.AddDays(-29) : MinDate, out var from)
            || from > to || to.DayNumber - from.DayNumber > 366)
        {
            return Problems.Of(StatusCodes.Status400BadRequest, "Invalid dates",
                $"'start_date' and 'end_date' are YYYY-MM-DD from {MinDate:yyyy-MM-dd} to {MaxDate:yyyy-MM-dd}, start before end, at most 366 days apart.");
        }

        var rows = await store.UsageAsync(tenant, from, to, ct);
        return TypedResults.Ok(new
        {
            @object = "list",
            start_date = from.ToString("yyyy-MM-dd"),
            end_date = to.ToString("yyyy-MM-dd"),
            data = rows.Select(r => new
            {
                tenant_id = r.TenantId,
                date = r.Day.ToString("yyyy-MM-dd"),
                jobs = r.Jobs,
                prompt_tokens = r.PromptTokens,
                completion_tokens = r.CompletionTokens,
                cached_tokens = r.CachedTokens,
                total_tokens = r.PromptTokens + r.CompletionTokens,
            }),
        });
    }

    /// <summary>The dates usage can be asked for: the Unix epoch (no job is older) to a year whose next day exists.</summary>
    private static readonly DateOnly MinDate = new(1970, 1, 1);

    private static readonly DateOnly MaxDate = new(9999, 12, 30);

    private static bool TryDate(string? text, DateOnly fallback, out DateOnly date)
    {
        date = fallback;
        return text is null || (DateOnly.TryParseExact(text, "yyyy-MM-dd", out date) && date >= MinDate && date <= MaxDate);
    }
}
