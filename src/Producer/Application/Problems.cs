using System.Globalization;

namespace LlmServing.Producer.Application;

/// <summary>Problem details (RFC 9457), as every endpoint answers a request it refuses.</summary>
internal static class Problems
{
    public static IResult Of(int status, string title, string detail) =>
        TypedResults.Problem(statusCode: status, title: title, detail: detail);

    /// <summary>The same answer with a <c>Retry-After</c> header, for a refusal that passes (429, 503).</summary>
    public static IResult RetryAfter(int seconds, IResult problem) => new RetryAfterResult(seconds, problem);

    private sealed class RetryAfterResult(int seconds, IResult inner) : IResult
    {
        public Task ExecuteAsync(HttpContext httpContext)
        {
            httpContext.Response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
            return inner.ExecuteAsync(httpContext);
        }
    }
}
