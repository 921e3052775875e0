using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace LlmServing.Tests.Infrastructure;

/// <summary>Calls the files and batches API over HTTP, as a client without the OpenAI SDK would.</summary>
public static class BatchApi
{
    public static async Task<string> UploadAsync(this HttpClient client, string jsonl, string purpose = "batch")
    {
        using var response = await client.PostAsync("/v1/files", Form(jsonl, purpose));
        var text = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(200), text);
        return JsonNode.Parse(text)!["id"]!.GetValue<string>();
    }

    public static MultipartFormDataContent Form(string jsonl, string purpose)
    {
        var file = new ByteArrayContent(Encoding.UTF8.GetBytes(jsonl));
        file.Headers.ContentType = new MediaTypeHeaderValue("application/jsonl");
        return new MultipartFormDataContent { { new StringContent(purpose), "purpose" }, { file, "file", "input.jsonl" } };
    }

    public static async Task<JsonNode> CreateBatchAsync(this HttpClient client, string fileId, string endpoint = "/v1/chat/completions")
    {
        using var response = await client.PostAsJsonAsync("/v1/batches",
            new { input_file_id = fileId, endpoint, completion_window = "24h", metadata = new { purpose = "test" } });
        var text = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(200), text);
        return JsonNode.Parse(text)!;
    }

    public static async Task<JsonNode> GetBatchAsync(this HttpClient client, string id) =>
        JsonNode.Parse(await client.GetStringAsync($"/v1/batches/{id}"))!;

    /// <summary>Polls until the batch has one of <paramref name="statuses"/>.</summary>
    public static async Task<JsonNode> WaitForBatchAsync(this HttpClient client, string id, TimeSpan timeout, params string[] statuses)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var batch = await client.GetBatchAsync(id);
            var status = batch["status"]!.GetValue<string>();
            if (statuses.Contains(status))
            {
                return batch;
            }

            Assert.That(DateTime.UtcNow, Is.LessThan(deadline), $"batch still {status}: {batch.ToJsonString()}");
            await Task.Delay(100);
        }
    }

    public static async Task<List<JsonNode>> DownloadLinesAsync(this HttpClient client, string? fileId)
    {
        if (fileId is null)
        {
            return [];
        }

        var text = await client.GetStringAsync($"/v1/files/{fileId}/content");
        return [.. text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!)];
    }

    public static string ChatLine(string customId, string content, int maxTokens = 8, string url = "/v1/chat/completions", string method = "POST") =>
        JsonSerializer.Serialize(new
        {
            custom_id = customId,
            method,
            url,
            body = new { model = "tiny", messages = new[] { new { role = "user", content } }, max_tokens = maxTokens, ignore_eos = true },
        });

    public static int Int(this JsonNode node, string path) =>
        path.Split('.').Aggregate(node, (n, p) => n[p]!).GetValue<int>();

    public static string? Str(this JsonNode node, string name) => node[name]?.GetValue<string>();
}
