using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Reflection;
using System.Text;
using System.Text.Json.Nodes;
using LlmServing.Tests.Infrastructure;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>
/// A fuzz pass over every endpoint: generated hostile bodies, query strings, paths and headers (deep nesting, huge
/// arrays, every field with each wrong type, lone surrogates, control characters, huge numbers, long text). Nothing may
/// answer 5xx, the Producer must keep answering, and every batch it accepted must leave <c>validating</c>. Seeded, so a
/// failure names the request that caused it and reruns the same way. Runs with API keys on, so the admin routes are
/// reached too, as one tenant of its own.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class FuzzTests
{
    private const string AdminKey = "admin-secret-for-the-fuzz-pass";
    private const int Seed = 20261202;

    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-fuzz";
    private readonly List<string> _failures = [];
    private readonly List<string> _batches = [];
    private readonly List<Guid> _jobs = [];
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;
    private HttpClient _tenant = null!;
    private HttpClient _admin = null!;
    private int _sent;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?> { ["Producer:AdminKey"] = AdminKey });
        // A worker answers the requests that are valid (the synchronous endpoints wait for one), in 2 tokens.
        _worker = await WorkerInstance.StartAsync(_queue, new Dictionary<string, string?> { ["Inference:Slots"] = "8" });
        _admin = Client(AdminKey);
        using var created = await _admin.PostAsJsonAsync("/v1/admin/keys", new { tenant_id = $"fuzz-{TestServices.RunId}" });
        created.EnsureSuccessStatusCode();
        _tenant = Client((await created.Content.ReadFromJsonAsync<JsonObject>())!["key"]!.GetValue<string>());
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        foreach (var id in _batches)
        {
            using var _ = await _tenant.PostAsync($"/v1/batches/{id}/cancel", null);
        }

        _tenant.Dispose();
        _admin.Dispose();
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
        await Broker.DeleteAsync(_queue + "-batch");
    }

    private HttpClient Client(string key)
    {
        // Header values go out as Latin-1, so that bytes above 0x7F reach the server (HttpClient refuses them otherwise).
        var handler = new SocketsHttpHandler { RequestHeaderEncodingSelector = (_, _) => Encoding.Latin1 };
        var client = new HttpClient(handler) { BaseAddress = _producer.Client.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return client;
    }

    /// <summary>Hostile JSON values, as raw JSON text.</summary>
    private static readonly string[] HostileValues =
    [
        "null", "true", "false", "0", "-1", "2147483648", "-9223372036854775809", "99999999999999999999999999999",
        "1e400", "-1e400", "1e-400", "0.5", "NaN", "\"\"", "\"x\"", "\"-1\"", "\"\\ud800\"", "\"a\\udc00b\"", "\"\\u0000\"",
        "\"\\u0001\\u001f\\u007f\"", "\"\\ufeff\\u202e\"", "[]", "[null]", "[\"\\ud800\"]", "[1, \"a\", {}]", "{}",
        "{\"\\ud800\": 1}", "{\"a\": {\"b\": {\"c\": []}}}",
        "[" + string.Join(",", Enumerable.Repeat("1", 20_000)) + "]",
        "\"" + new string('a', 200_000) + "\"",
        new string('[', 5_000) + new string(']', 5_000),
        new string('[', 60) + "\"\\ud800\"" + new string(']', 60),
        string.Concat(Enumerable.Repeat("{\"a\":", 3_000)) + "1" + new string('}', 3_000),
    ];

    /// <summary>Whole bodies that are not what any endpoint takes.</summary>
    private static readonly string[] HostileBodies =
    [
        "", " ", "{", "}", "[]", "null", "\"text\"", "{\"a\":}", "{\"prompt\": \"a\"", "\u0000", "{\"prompt\": \"\\ud800\"}",
        new string('{', 10_000), new string('[', 100_000), "{\"prompt\": \"a\", \"prompt\": \"b\"}",
    ];

    private static readonly string[] HostileQueryValues =
    [
        "", "-1", "0", "99999999999999999999", "1e400", "NaN", "abc", "%00", "%ED%A0%80", "%FF%FE", "%C0%80", "null", "[]",
        "2026-13-45", "0001-01-01", "9999-12-31", "-99999999999999", new string('9', 5_000), "%F0%9F%99%82",
    ];

    private static readonly string[] HostileIds =
    [
        "%00", "%ED%A0%80", "%FF", "..%2F..", "file-" + new string('a', 5_000), "batch_x", "00000000-0000-0000-0000-000000000000",
        "%20", "-1",
    ];

    private static IEnumerable<string> JobFields() =>
        typeof(CreateJobRequest).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.Name != nameof(CreateJobRequest.OtherFields))
            .Select(p => System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name))
            .Concat(["model", "stream", "stream_options", "user", "tools", "tool_choice", "functions", "suffix", "echo", "best_of"]);

    [Test]
    public async Task ShouldNeverAnswer5xxOrLeaveABatchValidating_WhenEveryEndpointGetsHostileInput()
    {
        var clock = Stopwatch.StartNew();
        var random = new Random(Seed);
        var fileId = await UploadAsync("{\"custom_id\": \"ok\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 2}}\n");

        // 1. Each field of each JSON body, set to each hostile value, on an otherwise valid request.
        var bodies = new (string Path, string Valid, IEnumerable<string> Fields)[]
        {
            ("/v1/jobs", "{\"prompt\": \"Once\", \"max_tokens\": 2}", JobFields()),
            ("/v1/chat/completions", "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 2}", JobFields()),
            ("/v1/completions", "{\"model\": \"m\", \"prompt\": \"Once\", \"max_tokens\": 2}", JobFields()),
            ("/v1/batches", $"{{\"input_file_id\": \"{fileId}\", \"endpoint\": \"/v1/chat/completions\", \"completion_window\": \"24h\"}}",
                ["input_file_id", "endpoint", "completion_window", "metadata", "webhook_url"]),
        };
        foreach (var (path, valid, fields) in bodies)
        {
            foreach (var field in fields)
            {
                foreach (var value in HostileValues)
                {
                    var body = JsonNode.Parse(valid)!.AsObject();
                    body.Remove(field);
                    var text = body.ToJsonString();
                    text = text[..^1] + (body.Count > 0 ? "," : "") + $"\"{field}\":{value}}}";
                    await SendAsync(_tenant, HttpMethod.Post, path, text);
                }
            }

            // Nested places: a message's role and content, a response_format's parts, a schema's keywords.
            foreach (var value in HostileValues.OrderBy(_ => random.Next()).Take(12))
            {
                await SendAsync(_tenant, HttpMethod.Post, path, $"{{\"messages\": [{{\"role\": \"user\", \"content\": {value}}}]}}");
                await SendAsync(_tenant, HttpMethod.Post, path, $"{{\"messages\": [{{\"role\": {value}, \"content\": \"hi\"}}]}}");
                await SendAsync(_tenant, HttpMethod.Post, path, $"{{\"messages\": [{{\"role\": \"user\", \"content\": [{{\"type\": \"text\", \"text\": {value}}}]}}]}}");
                await SendAsync(_tenant, HttpMethod.Post, path, $"{{\"prompt\": \"a\", \"response_format\": {{\"type\": \"json_schema\", \"json_schema\": {{\"name\": {value}, \"schema\": {{\"type\": \"string\"}}}}}}}}");
                foreach (var keyword in new[] { "type", "properties", "required", "items", "enum", "const", "anyOf", "$ref", "$defs", "minLength", "maxItems" })
                {
                    await SendAsync(_tenant, HttpMethod.Post, path,
                        $"{{\"prompt\": \"a\", \"response_format\": {{\"type\": \"json_schema\", \"json_schema\": {{\"name\": \"x\", \"schema\": {{\"type\": \"object\", \"{keyword}\": {value}}}}}}}}}");
                }
            }

            foreach (var body in HostileBodies)
            {
                await SendAsync(_tenant, HttpMethod.Post, path, body);
            }
        }

        // 2. Other JSON bodies: webhooks, admin keys and tenant settings.
        foreach (var value in HostileValues)
        {
            await SendAsync(_tenant, HttpMethod.Put, "/v1/webhooks", $"{{\"url\": {value}}}");
            await SendAsync(_admin, HttpMethod.Post, "/v1/admin/keys", $"{{\"tenant_id\": {value}}}");
            await SendAsync(_admin, HttpMethod.Put, "/v1/admin/tenants/fuzz-settings/settings", $"{{\"job_retention_days\": {value}}}");
            await SendAsync(_admin, HttpMethod.Put, "/v1/admin/tenants/fuzz-settings/settings", $"{{\"max_enqueued_tokens\": {value}}}");
        }

        foreach (var body in HostileBodies)
        {
            await SendAsync(_tenant, HttpMethod.Put, "/v1/webhooks", body);
            await SendAsync(_admin, HttpMethod.Post, "/v1/admin/keys", body);
            await SendAsync(_admin, HttpMethod.Put, "/v1/admin/tenants/fuzz-settings/settings", body);
        }

        // 3. Query strings of every list and read.
        var queries = new (string Path, string[] Names)[]
        {
            ("/v1/jobs", ["limit", "after", "status", "batch_id", "created_after", "created_before", "order"]),
            ("/v1/files", ["purpose", "limit", "after", "order"]),
            ("/v1/batches", ["limit", "after"]),
            ("/v1/usage", ["start_date", "end_date"]),
            ("/v1/admin/usage", ["start_date", "end_date"]),
            ("/v1/webhooks/deliveries", ["subject_id", "limit"]),
            ($"/v1/jobs/{Guid.NewGuid()}/stream", ["from"]),
        };
        foreach (var (path, names) in queries)
        {
            foreach (var name in names)
            {
                foreach (var value in HostileQueryValues)
                {
                    await SendAsync(path.StartsWith("/v1/admin", StringComparison.Ordinal) ? _admin : _tenant, HttpMethod.Get, $"{path}?{name}={value}", null);
                }
            }
        }

        // 4. Ids in paths, and headers.
        foreach (var id in HostileIds)
        {
            foreach (var (method, path) in new[]
                     {
                         (HttpMethod.Get, $"/v1/files/{id}"), (HttpMethod.Get, $"/v1/files/{id}/content"), (HttpMethod.Delete, $"/v1/files/{id}"),
                         (HttpMethod.Get, $"/v1/batches/{id}"), (HttpMethod.Post, $"/v1/batches/{id}/cancel"), (HttpMethod.Get, $"/v1/jobs/{id}"),
                         (HttpMethod.Post, $"/v1/jobs/{id}/cancel"), (HttpMethod.Delete, $"/v1/jobs/{id}"), (HttpMethod.Get, $"/v1/models/{id}"),
                     })
            {
                await SendContentAsync(_tenant, method, path, null);
            }

            await SendContentAsync(_admin, HttpMethod.Get, $"/v1/admin/tenants/{id}/settings", null);
            await SendContentAsync(_admin, HttpMethod.Delete, $"/v1/admin/keys/{id}", null);
        }

        foreach (var header in new[] { "\u00ff\u00fe", new string('k', 20_000), " ", "a\tb" })
        {
            await SendAsync(_tenant, HttpMethod.Post, "/v1/jobs", "{\"prompt\": \"a\", \"max_tokens\": 1}", ("Idempotency-Key", header));
            await SendAsync(_tenant, HttpMethod.Get, $"/v1/jobs/{Guid.NewGuid()}/stream", null, ("Last-Event-ID", header));
        }

        // 5. Multipart uploads: broken forms, hostile purposes, and batch files of hostile lines that then run.
        foreach (var purpose in new[] { "", "\u0000", "x", new string('p', 10_000), "batch\ud800" })
        {
            using var form = new MultipartFormDataContent { { new StringContent(purpose), "purpose" }, { new ByteArrayContent("{}\n"u8.ToArray()), "file", "a.jsonl" } };
            await SendContentAsync(_tenant, HttpMethod.Post, "/v1/files", form);
        }

        await SendContentAsync(_tenant, HttpMethod.Post, "/v1/files", Multipart("not a form"));
        await SendContentAsync(_tenant, HttpMethod.Post, "/v1/files", Multipart("--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc"));
        var lines = new StringBuilder();
        foreach (var value in HostileValues.Where(v => v.Length < 1_000))
        {
            lines.Append($"{{\"custom_id\": {value}, \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {{\"max_tokens\": 1, \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}}}\n");
            lines.Append($"{{\"custom_id\": \"c{lines.Length}\", \"method\": {value}, \"url\": \"/v1/chat/completions\", \"body\": {{}}}}\n");
            lines.Append($"{{\"custom_id\": \"b{lines.Length}\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {value}}}\n");
            lines.Append($"{{\"custom_id\": \"m{lines.Length}\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {{\"max_tokens\": {value}, \"messages\": [{{\"role\": \"user\", \"content\": {value}}}]}}}}\n");
        }

        lines.Append("\u0000\n{\n\"\\ud800\"\n").Append(new string('[', 5_000)).Append('\n').Append("\xff\n");
        var hostileFile = await UploadAsync(lines.ToString());
        await SendAsync(_tenant, HttpMethod.Post, "/v1/batches", $"{{\"input_file_id\": \"{hostileFile}\", \"endpoint\": \"/v1/chat/completions\", \"completion_window\": \"24h\"}}");

        // The Producer still answers, and every batch it accepted has left 'validating'.
        using (var health = await _producer.Client.GetAsync("/health/ready"))
        {
            Assert.That((int)health.StatusCode, Is.EqualTo(200), "the Producer still answers after the pass");
        }

        Assert.That(_failures, Is.Empty, $"{_failures.Count} of {_sent} requests answered 5xx or no answer:\n" + string.Join("\n", _failures.Take(30)));
        Assert.That(_batches, Is.Not.Empty, "the valid batch bodies were accepted");
        foreach (var id in _batches)
        {
            var status = "";
            await Eventually.WaitUntilAsync(async () =>
            {
                using var response = await _tenant.GetAsync($"/v1/batches/{id}");
                status = (await response.Content.ReadFromJsonAsync<JsonObject>())!["status"]!.GetValue<string>();
                return status != "validating";
            });
        }

        // Every job it accepted ends (the worker runs them: 1 or 2 tokens each).
        Assert.That(_jobs, Is.Not.Empty, "the valid job bodies were accepted");
        foreach (var id in _jobs)
        {
            var job = await _tenant.WaitForFinalAsync(id, TimeSpan.FromSeconds(60));
            Assert.That(job.Status, Is.EqualTo(Contracts.JobStatuses.Succeeded), $"job {id}: {job.Error}");
        }

        TestContext.Out.WriteLine($"{_sent} hostile requests in {clock.Elapsed.TotalSeconds:F1} s: {_jobs.Count} jobs and {_batches.Count} batches accepted");
    }

    private async Task<string> UploadAsync(string jsonl)
    {
        using var form = new MultipartFormDataContent { { new StringContent("batch"), "purpose" }, { new ByteArrayContent(Encoding.UTF8.GetBytes(jsonl)), "file", "fuzz.jsonl" } };
        using var response = await _tenant.PostAsync("/v1/files", form);
        var text = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(200), text);
        return JsonNode.Parse(text)!["id"]!.GetValue<string>();
    }

    private Task SendAsync(HttpClient client, HttpMethod method, string path, string? json, params (string Name, string Value)[] headers) =>
        SendContentAsync(client, method, path, json is null ? null : new StringContent(json, Encoding.UTF8, "application/json"), headers);

    private async Task SendContentAsync(HttpClient client, HttpMethod method, string path, HttpContent? content, params (string Name, string Value)[] headers)
    {
        _sent++;
        var shown = $"{method} {Shorten(path)} {Shorten(content is StringContent ? await content.ReadAsStringAsync() : "")}";
        using var request = new HttpRequestMessage(method, path) { Content = content };
        foreach (var (name, value) in headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        try
        {
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            if ((int)response.StatusCode >= 500)
            {
                _failures.Add($"{(int)response.StatusCode} {shown}: {Shorten(await response.Content.ReadAsStringAsync())}");
            }
            else if (method == HttpMethod.Post && path == "/v1/batches" && response.IsSuccessStatusCode)
            {
                _batches.Add(JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>());
            }
            else if (method == HttpMethod.Post && path == "/v1/jobs" && response.IsSuccessStatusCode)
            {
                _jobs.Add(Guid.Parse(JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>()));
            }
        }
        catch (HttpRequestException e)
        {
            _failures.Add($"no answer ({e.Message}) {shown}");
        }
        catch (TaskCanceledException)
        {
            _failures.Add($"no answer in 30 s {shown}");
        }
    }

    private static StringContent Multipart(string text)
    {
        var content = new StringContent(text);
        content.Headers.Remove("Content-Type");
        content.Headers.TryAddWithoutValidation("Content-Type", "multipart/form-data; boundary=x");
        return content;
    }

    private static string Shorten(string text) => text.Length <= 160 ? text : text[..120] + $"... ({text.Length} chars)";
}
