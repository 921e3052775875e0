using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Producer.Http;

public static class TenantsExtensions
{
    /// <summary>Per-tenant limits: the token bucket on job submissions (per replica) and the key-guessing limiter.</summary>
    public static WebApplicationBuilder AddTenantLimits(this WebApplicationBuilder builder)
    {
        builder.Services.AddSingleton<InvalidKeyLimiter>();
        builder.Services.AddRateLimiter(o =>
        {
            // Per tenant: a token bucket refilled at Producer:RateLimitPerSecond; 429 + Retry-After when empty.
            o.AddPolicy(JobsApi.SubmitPolicy, context =>
            {
                var rate = context.RequestServices.GetRequiredService<IOptions<ProducerOptions>>().Value.RateLimitPerSecond;
                if (rate <= 0)
                {
                    return System.Threading.RateLimiting.RateLimitPartition.GetNoLimiter("off");
                }

                return System.Threading.RateLimiting.RateLimitPartition.GetTokenBucketLimiter(context.Tenant(), _ => new System.Threading.RateLimiting.TokenBucketRateLimiterOptions
                {
                    TokenLimit = Math.Max(1, (int)Math.Ceiling(rate * 2)),
                    TokensPerPeriod = Math.Max(1, (int)Math.Ceiling(rate)),
                    ReplenishmentPeriod = TimeSpan.FromSeconds(Math.Max(1, Math.Ceiling(rate) / rate)),
                    QueueLimit = 0,
                    AutoReplenishment = true,
                });
            });
            o.OnRejected = async (context, ct) =>
            {
                var retryAfter = context.Lease.TryGetMetadata(System.Threading.RateLimiting.MetadataName.RetryAfter, out var wait) ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds)) : 1;
                context.HttpContext.Response.Headers.RetryAfter = retryAfter.ToString(System.Globalization.CultureInfo.InvariantCulture);
                await Results.Problem(statusCode: StatusCodes.Status429TooManyRequests, title: "Rate limit exceeded",
                    detail: $"This tenant submits jobs faster than its limit; retry after {retryAfter} s.").ExecuteAsync(context.HttpContext);
            };
        });
        return builder;
    }
}
