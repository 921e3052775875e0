namespace LlmServing.Producer.Http;

/// <summary>Problem details (RFC 9457), as every endpoint answers a request it refuses.</summary>
internal static class Problems
{
    public static IResult Of(int status, string title, string detail) =>
        TypedResults.Problem(statusCode: status, title: title, detail: detail);
}
