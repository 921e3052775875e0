using System.Runtime.CompilerServices;

namespace LlmServing.Tests.Infrastructure;

/// <summary>Reads Server-Sent Events from a response: each event's id, name and data (comments skipped).</summary>
public static class SseReader
{
    public sealed record Event(string? Id, string? Name, string Data);

    public static async IAsyncEnumerable<Event> EventsAsync(HttpResponseMessage response, [EnumeratorCancellation] CancellationToken ct = default)
    {
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(ct));
        string? id = null, name = null;
        var data = new List<string>();
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (line.Length == 0)
            {
                if (data.Count > 0)
                {
                    yield return new Event(id, name, string.Join("\n", data));
                }

                (id, name) = (null, null);
                data.Clear();
            }
            else if (line.StartsWith("id: ", StringComparison.Ordinal))
            {
                id = line[4..];
            }
            else if (line.StartsWith("event: ", StringComparison.Ordinal))
            {
                name = line[7..];
            }
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                data.Add(line[6..]);
            }
        }
    }
}
