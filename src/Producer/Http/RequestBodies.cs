using System.Text.Json;
using System.Text.Json.Nodes;

namespace LlmServing.Producer.Http;

/// <summary>Request bodies read with a cap, so an oversized one is refused without being held whole.</summary>
internal static class RequestBodies
{
    /// <summary>Raises Kestrel's body limit for this request (uploads are larger than API calls).</summary>
    public static void AllowBody(HttpRequest http, long bytes)
    {
        if (http.HttpContext.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = bytes;
        }
    }

    /// <summary>Reads the body up to <paramref name="limit"/> bytes; null when it is longer.</summary>
    public static async Task<byte[]?> ReadLimitedAsync(Stream body, int limit, CancellationToken ct)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await body.ReadAsync(chunk, ct)) > 0)
        {
            if (buffer.Length + read > limit)
            {
                return null;
            }

            buffer.Write(chunk, 0, read);
        }

        return buffer.ToArray();
    }

    private static readonly JsonDocumentOptions Strict = new() { AllowDuplicateProperties = false };

    /// <summary>
    /// The body as a JSON object (null when it is JSON but not an object); a property given twice is a
    /// <see cref="JsonException"/>, like any malformed body (a <see cref="JsonObject"/> would otherwise throw
    /// <see cref="ArgumentException"/> on first use, a 500).
    /// </summary>
    public static JsonObject? ParseObject(byte[] bytes) => JsonNode.Parse(bytes, documentOptions: Strict) as JsonObject;
}
