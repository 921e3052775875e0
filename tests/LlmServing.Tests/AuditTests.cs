using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// The audit's defects that need only a Producer (PostgreSQL and RabbitMQ, no worker): NUL characters, the admin
/// routes, leaking files, multipart errors, the queued-jobs cap, deployment defaults. Each failed before its fix.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class AuditTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-audit";
    private ProducerInstance _producer = null!;

    private HttpClient Api => _producer.Client;

    [OneTimeSetUp]
    public async Task StartAsync() => _producer = await ProducerInstance.StartAsync(_queue);

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    private static IEnumerable<TestCaseData> NulBodies()
    {
        TestCaseData Case(string name, string json, string field) => new TestCaseData(json, field).SetName($"ShouldReject422_WhenNulIsIn{name}");
        yield return Case("Prompt", """{"prompt": "a\u0000b"}""", "prompt");
        yield return Case("MessageContent", """{"messages": [{"role": "user", "content": "hi\u0000"}]}""", "messages[0].content");
        yield return Case("StopString", """{"prompt": "a", "stop": ["\u0000"]}""", "stop");
    }

    private static IEnumerable<TestCaseData> SurrogateBodies()
    {
        // JSON escapes of a lone surrogate: System.Text.Json accepts them, PostgreSQL and UTF-8 cannot hold them (500 before).
        TestCaseData Case(string name, string json, string field) => new TestCaseData(json, field).SetName($"ShouldReject422_WhenALoneSurrogateIsIn{name}");
        yield return Case("Prompt", """{"prompt": "a\ud800b"}""", "prompt");
        yield return Case("MessageContent", """{"messages": [{"role": "user", "content": "hi\udfff"}]}""", "messages[0].content");
        yield return Case("StopString", """{"prompt": "a", "stop": ["\ud800"]}""", "stop");
        yield return Case("ASchemaPropertyName", """{"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"\ud800": {"type": "string"}}, "required": ["\ud800"]}}}}""", "response_format");
        yield return Case("ASchemaEnum", """{"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"enum": ["\ud800"]}}}}""", "response_format");
        yield return Case("AWebhookUrl", """{"prompt": "a", "webhook_url": "http://127.0.0.1/\ud800"}""", "webhook_url");
        yield return Case("AGrammar", """{"prompt": "a", "grammar": "root ::= \"\ud800\""}""", "grammar");
    }

    [TestCaseSource(nameof(SurrogateBodies))]
    public async Task ShouldRejectALoneSurrogateInAJob(string json, string field)
    {
        using var response = await Api.PostAsync("/v1/jobs", new StringContent(json, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();

        Assert.That((int)response.StatusCode, Is.EqualTo(422), text);
        Assert.That(JsonNode.Parse(text)!["errors"]![field]![0]!.GetValue<string>(), Does.Contain("lone UTF-16 surrogate"));
    }

    [Test]
    public async Task ShouldReject422_WhenABatchNamesAFileWithALoneSurrogate()
    {
        using var response = await Api.PostAsync("/v1/batches", new StringContent(
            """{"input_file_id": "file-\ud800", "endpoint": "/v1/chat/completions", "completion_window": "24h"}""", Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();

        Assert.That((int)response.StatusCode, Is.EqualTo(422), text);
        Assert.That(text, Does.Contain("'input_file_id' contains a lone UTF-16 surrogate"));
    }

    [TestCase("/v1/jobs?created_after=99999999999999")]
    [TestCase("/v1/jobs?created_before=-99999999999999")]
    [TestCase("/v1/usage?end_date=9999-12-31")]
    [TestCase("/v1/usage?start_date=0001-01-01&end_date=0001-01-05")]
    public async Task ShouldReject400_WhenAQueryValueIsOutOfRange(string path)
    {
        using var response = await Api.GetAsync(path);
        var text = await response.Content.ReadAsStringAsync();

        Assert.That((int)response.StatusCode, Is.EqualTo(400), text);
        Assert.That(JsonNode.Parse(text)!["detail"]!.GetValue<string>(), Is.Not.Empty);
    }

    [Test]
    public async Task ShouldAnswerUsageForTheLastValidDays_WhenTheRangeEndsAtTheLimit()
    {
        using var response = await Api.GetAsync("/v1/usage?start_date=9999-12-01&end_date=9999-12-30");

        Assert.That((int)response.StatusCode, Is.EqualTo(200), await response.Content.ReadAsStringAsync());
    }

    [TestCaseSource(nameof(NulBodies))]
    public async Task ShouldRejectNulInAJob(string json, string field)
    {
        using var response = await Api.PostAsync("/v1/jobs", new StringContent(json, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();

        Assert.That((int)response.StatusCode, Is.EqualTo(422), text);
        Assert.That(JsonNode.Parse(text)!["errors"]![field]![0]!.GetValue<string>(), Does.Contain("NUL character"));
    }

    [Test]
    public async Task ShouldReject422_WhenBatchMetadataHoldsANul()
    {
        var file = await Api.UploadAsync(BatchApi.ChatLine("m1", "hello"));
        using var response = await Api.PostAsync("/v1/batches", new StringContent(
            $$$"""{"input_file_id": "{{{file}}}", "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"k": "v\u0000"}}""",
            Encoding.UTF8, "application/json"));

        Assert.That((int)response.StatusCode, Is.EqualTo(422), await response.Content.ReadAsStringAsync());
    }

    [Test]
    public async Task ShouldReject400_WhenAQueryStringHoldsANul()
    {
        using var response = await Api.GetAsync("/v1/batches?after=%00");
        var text = await response.Content.ReadAsStringAsync();

        Assert.That((int)response.StatusCode, Is.EqualTo(400), text);
        Assert.That(text, Does.Contain("NUL character"));
    }

    [Test]
    public async Task ShouldAnswer404ForAdminRoutes_WhenNoAdminKeyIsSet()
    {
        using var create = await Api.PostAsJsonAsync("/v1/admin/keys", new { tenant_id = "intruder" });
        using var revoke = await Api.DeleteAsync($"/v1/admin/keys/{Guid.NewGuid()}");

        Assert.That(create.StatusCode, Is.EqualTo(HttpStatusCode.NotFound), await create.Content.ReadAsStringAsync());
        Assert.That(revoke.StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
        Assert.That(await TestDatabase.ScalarAsync("SELECT count(*) FROM api_keys WHERE tenant_id = 'intruder'"), Is.Zero, "no key was minted");
    }

    [Test]
    public async Task ShouldKeepNoOrphanFile_WhenTheFilePartComesBeforeAnInvalidPurpose()
    {
        var before = await FileCountAsync();
        var file = new ByteArrayContent(Encoding.UTF8.GetBytes(BatchApi.ChatLine("o1", "hi")));
        using var form = new MultipartFormDataContent { { file, "file", "input.jsonl" }, { new StringContent("fine-tune"), "purpose" } };
        using var response = await Api.PostAsync("/v1/files", form);

        Assert.That((int)response.StatusCode, Is.EqualTo(400));
        Assert.That(await FileCountAsync(), Is.EqualTo(before), "the stored part was removed");
    }

    [Test]
    public async Task ShouldAnswer400WithoutEchoingIt_WhenThePurposeIsHuge()
    {
        var purpose = new string('p', 2 << 20);
        using var response = await Api.PostAsync("/v1/files", BatchApi.Form(BatchApi.ChatLine("p1", "hi"), purpose));
        var text = await response.Content.ReadAsStringAsync();

        Assert.That((int)response.StatusCode, Is.EqualTo(400));
        Assert.That(text.Length, Is.LessThan(1000), "the purpose is not echoed");
    }

    [TestCase(513, TestName = "ShouldAnswer400AndKeepNoChunks_WhenTheFilenameIsTooLong")]
    [TestCase(0, TestName = "ShouldAnswer400AndKeepNoChunks_WhenTheFilenameHoldsANul")]
    public async Task ShouldRefuseABadFilename(int length)
    {
        var chunksBefore = await ChunkCountAsync();
        var name = length > 0 ? new string('n', length) : "in\u0000put.jsonl";
        var file = new ByteArrayContent(Encoding.UTF8.GetBytes(BatchApi.ChatLine("f1", "hi")));
        file.Headers.ContentDisposition = new ContentDispositionHeaderValue("form-data") { Name = "\"file\"", FileNameStar = name };
        using var form = new MultipartFormDataContent { { new StringContent("batch"), "purpose" }, file };
        using var response = await Api.PostAsync("/v1/files", form);

        Assert.That((int)response.StatusCode, Is.EqualTo(400), await response.Content.ReadAsStringAsync());
        Assert.That(await ChunkCountAsync(), Is.EqualTo(chunksBefore), "no orphan chunks");
    }

    [Test]
    public async Task ShouldAnswer400_WhenTheMultipartBodyIsTruncated()
    {
        const string body = "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jsonl\"\r\n\r\n{\"custom_id\"";
        var content = new StringContent(body);
        content.Headers.ContentType = MediaTypeHeaderValue.Parse("multipart/form-data; boundary=b");
        using var response = await Api.PostAsync("/v1/files", content);

        Assert.That((int)response.StatusCode, Is.EqualTo(400), await response.Content.ReadAsStringAsync());
    }

    [Test]
    public async Task ShouldAnswer400_WhenAPartsHeadersAreOver16KiB()
    {
        var body = $"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\nX-Pad: {new string('x', 20_000)}\r\n\r\nbatch\r\n--b--\r\n";
        var content = new StringContent(body);
        content.Headers.ContentType = MediaTypeHeaderValue.Parse("multipart/form-data; boundary=b");
        using var response = await Api.PostAsync("/v1/files", content);

        Assert.That((int)response.StatusCode, Is.EqualTo(400), await response.Content.ReadAsStringAsync());
    }

    [Test]
    public async Task ShouldAnswer413_WhenABatchRequestBodyIsHuge()
    {
        var json = $$"""{"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "24h", "pad": "{{new string('x', 200_000)}}"}""";
        using var response = await Api.PostAsync("/v1/batches", new StringContent(json, Encoding.UTF8, "application/json"));

        Assert.That((int)response.StatusCode, Is.EqualTo(413));
    }

    [Test]
    public async Task ShouldReplayTheJob_WhenTheSameIdempotencyKeyComesWithOtherWhitespace()
    {
        var key = $"ws-{Guid.NewGuid():N}";
        async Task<HttpResponseMessage> Submit(string json)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/jobs") { Content = new StringContent(json, Encoding.UTF8, "application/json") };
            request.Headers.Add("Idempotency-Key", key);
            return await Api.SendAsync(request);
        }

        using var first = await Submit("""{"prompt": "same", "max_tokens": 3}""");
        using var second = await Submit("""{ "max_tokens":3,   "prompt":"same" }""");

        Assert.That((int)first.StatusCode, Is.EqualTo(202));
        Assert.That((int)second.StatusCode, Is.EqualTo(202), await second.Content.ReadAsStringAsync());
        Assert.That(second.Headers.Location, Is.EqualTo(first.Headers.Location));
    }

    [Test]
    public async Task ShouldAcceptExactlyTheCap_WhenManySubmitsRaceAgainstMaxQueuedJobsPerTenant()
    {
        // No worker on this queue: every accepted job stays queued.
        var queue = $"llm-jobs-test-{TestServices.RunId}-cap";
        var tenantDb = await ResetDefaultTenantQueuedAsync();
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:MaxQueuedJobsPerTenant"] = "5" });
            var results = await Task.WhenAll(Enumerable.Range(0, 20).Select(async i =>
            {
                using var response = await producer.Client.PostAsJsonAsync("/v1/jobs", new { prompt = $"race {i}", max_tokens = 2 });
                return (int)response.StatusCode;
            }));

            Assert.That(results.Count(s => s == 202), Is.EqualTo(5), string.Join(",", results));
            Assert.That(results.Count(s => s == 429), Is.EqualTo(15));
        }
        finally
        {
            await tenantDb.DisposeAsync();
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldStayReadyAndReportTheBroker_WhenRabbitMqIsUnreachable()
    {
        // Port 1 on loopback: nothing listens, the broker is "down" from the start.
        await using var producer = await ProducerInstance.StartAsync($"llm-jobs-test-{TestServices.RunId}-nobroker",
            new Dictionary<string, string?> { ["ConnectionStrings:RabbitMq"] = "amqp://guest:guest@127.0.0.1:1/" });

        using var ready = await producer.Client.GetAsync("/health/ready");
        using var broker = await producer.Client.GetAsync("/health/broker");
        var accepted = await producer.Client.SubmitAsync(new { prompt = "accepted while the broker is down", max_tokens = 2 });

        Assert.That(ready.StatusCode, Is.EqualTo(HttpStatusCode.OK), "ready needs PostgreSQL only");
        Assert.That(broker.StatusCode, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
        Assert.That(accepted.Status, Is.EqualTo(JobStatuses.Queued));
    }

    [Test]
    public async Task ShouldRefuseToStart_WhenAnAdminKeyIsRequiredButMissing()
    {
        var error = await Assert.ThrowsAsync<Microsoft.Extensions.Options.OptionsValidationException>(async () =>
            await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?> { ["Producer:RequireAdminKey"] = "true" }));

        Assert.That(error!.Message, Does.Contain("Producer__AdminKey"));
    }

    [TestCase("evil.example", false, TestName = "ShouldRefuseAConsolePost_WhenItsOriginIsAnUnknownNameThatMatchesTheHostHeader")]
    [TestCase("console.example", true, TestName = "ShouldAcceptAConsolePost_WhenItsOriginIsAConfiguredName")]
    public async Task ShouldCheckAConsolePostsOriginAgainstKnownHosts(string host, bool accepted)
    {
        // A DNS-rebinding page: its name resolves to this Producer, so its Host header and its Origin agree. The request
        // goes to 127.0.0.1; only the headers carry the name.
        await using var producer = await ProducerInstance.StartAsync($"llm-jobs-test-{TestServices.RunId}-origin",
            new Dictionary<string, string?> { ["Console:Hosts:0"] = "console.example" });
        var port = producer.Client.BaseAddress!.Port;
        using var request = new HttpRequestMessage(HttpMethod.Post, "/console/login")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string> { ["key"] = "not-a-key" }),
        };
        request.Headers.Host = $"{host}:{port}";
        request.Headers.Add("Origin", $"http://{host}:{port}");

        using var response = await producer.Client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();

        if (accepted)
        {
            Assert.That((int)response.StatusCode, Is.Not.EqualTo(403), text);
        }
        else
        {
            Assert.That((int)response.StatusCode, Is.EqualTo(403), text);
            Assert.That(text, Does.Contain("Cross-site request refused"));
        }
    }

    [Test]
    public async Task ShouldAnswer429_WhenOneAddressKeepsSendingUnknownKeys()
    {
        const string admin = "admin-secret-for-bad-keys";
        await using var producer = await ProducerInstance.StartAsync($"llm-jobs-test-{TestServices.RunId}-badkeys",
            new Dictionary<string, string?> { ["Producer:AdminKey"] = admin });
        using var mint = new HttpRequestMessage(HttpMethod.Post, "/v1/admin/keys") { Content = JsonContent.Create(new { tenant_id = "behind-nat" }) };
        mint.Headers.Authorization = new AuthenticationHeaderValue("Bearer", admin);
        using var minted = await producer.Client.SendAsync(mint);
        Assert.That(minted.StatusCode, Is.EqualTo(HttpStatusCode.Created));
        var validKey = (await minted.Content.ReadFromJsonAsync<JsonObject>())!["key"]!.GetValue<string>();

        async Task<int> StatusWithAsync(string key)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/jobs/{Guid.NewGuid()}");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            using var response = await producer.Client.SendAsync(request);
            return (int)response.StatusCode;
        }

        var statuses = new List<int>();
        for (var i = 0; i < 25; i++)
        {
            statuses.Add(await StatusWithAsync($"lls_guess_{i}"));
        }

        Assert.That(statuses.Take(20), Is.All.EqualTo(401));
        Assert.That(statuses.Skip(20), Is.All.EqualTo(429), "refused without a database lookup once over the limit");

        // The same address (an ingress or NAT shared by many clients): an active key still works, the admin key too,
        // and unknown keys stay refused.
        Assert.That(await StatusWithAsync(validKey), Is.EqualTo(404), "a valid key from the blocked address reaches the API (the job does not exist)");
        using var list = new HttpRequestMessage(HttpMethod.Post, "/v1/admin/keys") { Content = JsonContent.Create(new { tenant_id = "behind-nat-2" }) };
        list.Headers.Authorization = new AuthenticationHeaderValue("Bearer", admin);
        using var adminAnswer = await producer.Client.SendAsync(list);
        Assert.That(adminAnswer.StatusCode, Is.EqualTo(HttpStatusCode.Created), "the admin key from the blocked address");
        var second = (await adminAnswer.Content.ReadFromJsonAsync<JsonObject>())!["key"]!.GetValue<string>();
        Assert.That(await StatusWithAsync(second), Is.EqualTo(404).Or.EqualTo(429),
            "a key minted a moment ago may wait for the snapshot's next read");
        Assert.That(await StatusWithAsync("lls_guess_more"), Is.EqualTo(429));
    }

    /// <summary>
    /// Other fixtures leave queued jobs of the default tenant behind; they are parked as cancelled for the cap test
    /// (the returned scope is only for symmetry: nothing to restore).
    /// </summary>
    private static async Task<IAsyncDisposable> ResetDefaultTenantQueuedAsync()
    {
        var connection = await TestDatabase.OpenAsync();
        await connection.ExecAsync("UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE tenant_id = 'default' AND status = 'queued' AND batch_id IS NULL");
        return connection;
    }

    private static async Task<long> FileCountAsync() => await TestDatabase.ScalarAsync("SELECT count(*) FROM files");

    private static async Task<long> ChunkCountAsync() => await TestDatabase.ScalarAsync("SELECT count(*) FROM file_chunks f WHERE NOT EXISTS (SELECT 1 FROM files WHERE id = f.file_id)");
}
