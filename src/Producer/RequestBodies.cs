namespace LlmServing.Producer;

/// <summary>Request bodies read with a cap, so an oversized one is refused without being held whole.</summary>
internal static class RequestBodies
{
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
}
