using System.Text.Json;
using System.Text.Json.Nodes;

namespace LlmServing.Cli;

/// <summary>The API answered with an error (its problem details are in the message).</summary>
internal sealed class ApiException(string message) : Exception(message);

internal static class Api
{
    public static readonly JsonSerializerOptions Indented = new()
    {
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static async Task<JsonNode> ReadAsync(HttpResponseMessage response)
    {
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync();
            if (!response.IsSuccessStatusCode)
            {
                var detail = text;
                try
                {
                    var problem = JsonNode.Parse(text);
                    detail = $"{problem?["title"]}: {problem?["detail"] ?? problem?["errors"]?.ToJsonString()}";
                }
                catch (JsonException)
                {
                }

                throw new ApiException($"{(int)response.StatusCode} {detail}");
            }

            return JsonNode.Parse(text)!;
        }
    }
}
