#pragma warning disable OPENAI001 // the OpenAI SDK marks its batch client experimental
using System.ClientModel;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using OpenAI;
using OpenAI.Batch;
using OpenAI.Files;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>Batch files in the OpenAI Batch format, end to end on real RabbitMQ, PostgreSQL and llama.cpp.</summary>
[TestFixture]
[NonParallelizable]
public sealed class BatchTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-batches";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;

    private HttpClient Api => _producer.Client;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Producer:ContextSize"] = "4096",
            ["Producer:FinalizeInterval"] = "00:00:00.200",
        });
        _worker = await WorkerInstance.StartAsync(_queue);
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    [Test]
    public async Task ShouldRunValidLinesAndReportEachBadLine_WhenAFileMixesGoodAndBrokenLines()
    {
        var lines = new[]
        {
            BatchApi.ChatLine("c1", "first question", maxTokens: 5),
            BatchApi.ChatLine("wrong-url", "x", url: "/v1/completions"),
            "{not json at all",
            """{"method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "hi"}]}}""",
            BatchApi.ChatLine("c1", "duplicate id"),
            """{"custom_id": "hot", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "hi"}], "temperature": 5}}""",
            BatchApi.ChatLine("c2", "second question", maxTokens: 7),
            "",
            BatchApi.ChatLine("get", "x", method: "GET"),
            BatchApi.ChatLine("c4", "fourth question", maxTokens: 9),
        };

        var batch = await Api.CreateBatchAsync(await Api.UploadAsync(string.Join("\n", lines) + "\n"));
        var done = await Api.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromMinutes(2), "completed", "failed");

        Assert.That(done.Str("status"), Is.EqualTo("completed"), done.ToJsonString());
        Assert.That(done.Int("request_counts.total"), Is.EqualTo(9), "the blank line is not a request");
        Assert.That(done.Int("request_counts.completed"), Is.EqualTo(3));
        Assert.That(done.Int("request_counts.failed"), Is.EqualTo(6));
        Assert.That(done["metadata"]!["purpose"]!.GetValue<string>(), Is.EqualTo("test"));

        var output = (await Api.DownloadLinesAsync(done.Str("output_file_id"))).ToDictionary(l => l.Str("custom_id")!);
        Assert.That(output.Keys, Is.EquivalentTo(new[] { "c1", "c2", "c4" }));
        Assert.Multiple(() =>
        {
            foreach (var (id, tokens) in new[] { ("c1", 5), ("c2", 7), ("c4", 9) })
            {
                var response = output[id]["response"]!;
                Assert.That(response.Int("status_code"), Is.EqualTo(200));
                Assert.That(response["body"]!.Str("object"), Is.EqualTo("chat.completion"));
                Assert.That(response["body"]!.Str("model"), Is.EqualTo("tiny"));
                Assert.That(response["body"]!["choices"]![0]!["message"]!.Str("content"), Is.Not.Empty);
                Assert.That(response.Int("body.usage.completion_tokens"), Is.EqualTo(tokens));
                Assert.That(output[id]["error"], Is.Null);
            }
        });

        var errors = await Api.DownloadLinesAsync(done.Str("error_file_id"));
        var messages = errors.Select(e => e["error"]!.Str("message")!).ToList();
        Assert.That(errors, Has.Count.EqualTo(6));
        Assert.That(errors.Select(e => e["error"]!.Int("line")), Is.EqualTo(new[] { 2, 3, 4, 5, 6, 8 }));
        Assert.That(messages[0], Does.Contain("'url' must be the batch's endpoint"));
        Assert.That(messages[1], Does.Contain("not valid JSON"));
        Assert.That(messages[2], Does.Contain("no 'custom_id'"));
        Assert.That(messages[3], Does.Contain("duplicate custom_id 'c1'"));
        Assert.That(messages[4], Does.Contain("temperature"));
        Assert.That(messages[5], Does.Contain("'method' must be \"POST\""));
        Assert.That(errors[3].Str("custom_id"), Is.EqualTo("c1"));
    }

    [Test]
    public async Task ShouldRunCompletions_WhenTheJsonlIsPostedInOneCall()
    {
        var jsonl = string.Join("\n", Enumerable.Range(0, 5).Select(i => JsonSerializer.Serialize(new
        {
            custom_id = $"p{i}", method = "POST", url = "/v1/completions", body = new { prompt = $"Prompt {i}", max_tokens = 4, ignore_eos = true },
        })));

        using var response = await Api.PostAsync("/v1/batches?endpoint=/v1/completions", new StringContent(jsonl, Encoding.UTF8, "application/jsonl"));
        var batch = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        var done = await Api.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromMinutes(1), "completed", "failed");

        Assert.That(done.Int("request_counts.completed"), Is.EqualTo(5));
        var output = await Api.DownloadLinesAsync(done.Str("output_file_id"));
        Assert.That(output.Select(o => o["response"]!["body"]!.Str("object")), Is.All.EqualTo("text_completion"));
        Assert.That(output.Select(o => o["response"]!["body"]!["choices"]![0]!.Str("text")), Is.All.Not.Empty);
        Assert.That(done.Str("error_file_id"), Is.Null);
    }

    [TestCase("hello, this is not JSON\n{}", "invalid_file", TestName = "ShouldFailTheBatch_WhenTheFileIsNotJsonl")]
    [TestCase("\n\n  \n", "empty_file", TestName = "ShouldFailTheBatch_WhenTheFileIsEmpty")]
    public async Task ShouldFailTheBatchWithAFileError(string content, string code)
    {
        var batch = await Api.CreateBatchAsync(await Api.UploadAsync(content));
        var failed = await Api.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromSeconds(30), "failed", "completed");

        Assert.That(failed.Str("status"), Is.EqualTo("failed"));
        Assert.That(failed["errors"]!["data"]![0]!.Str("code"), Is.EqualTo(code));
        Assert.That(failed.Int("request_counts.total"), Is.Zero);
    }

    [Test]
    public async Task ShouldRejectBadBatchRequestsWithProblemDetails()
    {
        var fileId = await Api.UploadAsync(BatchApi.ChatLine("a", "b"));
        async Task<(int Status, string Body)> Post(object body)
        {
            using var r = await Api.PostAsync("/v1/batches", JsonContent(body));
            return ((int)r.StatusCode, await r.Content.ReadAsStringAsync());
        }

        var unknownFile = await Post(new { input_file_id = "file-nope", endpoint = "/v1/chat/completions", completion_window = "24h" });
        var badEndpoint = await Post(new { input_file_id = fileId, endpoint = "/v1/embeddings", completion_window = "24h" });
        var badWindow = await Post(new { input_file_id = fileId, endpoint = "/v1/chat/completions", completion_window = "1h" });
        using var badPurpose = await Api.PostAsync("/v1/files", BatchApi.Form("{}", "fine-tune"));
        using var notMultipart = await Api.PostAsync("/v1/files", new StringContent("{}", Encoding.UTF8, "application/json"));
        using var unknownBatch = await Api.GetAsync("/v1/batches/batch_nope");

        Assert.That(unknownFile.Status, Is.EqualTo(404));
        Assert.That(unknownFile.Body, Does.Contain("file-nope"));
        Assert.That(badEndpoint.Status, Is.EqualTo(400));
        Assert.That(badEndpoint.Body, Does.Contain("/v1/embeddings"));
        Assert.That(badWindow.Status, Is.EqualTo(400));
        Assert.That(badWindow.Body, Does.Contain("24h"));
        Assert.That((int)badPurpose.StatusCode, Is.EqualTo(400));
        Assert.That(await badPurpose.Content.ReadAsStringAsync(), Does.Contain("'purpose' must be").And.Not.Contain("fine-tune"), "the client's purpose is not echoed");
        Assert.That((int)notMultipart.StatusCode, Is.EqualTo(415));
        Assert.That((int)unknownBatch.StatusCode, Is.EqualTo(404));
    }

    [Test]
    public async Task ShouldReject413_WhenTheUploadIsLargerThanTheLimit()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-smallfiles";
        await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:MaxFileBytes"] = "2048" });

        using var response = await producer.Client.PostAsync("/v1/files", BatchApi.Form(new string('x', 5000), "batch"));

        Assert.That((int)response.StatusCode, Is.EqualTo(413));
        Assert.That(await response.Content.ReadAsStringAsync(), Does.Contain("2048"));
        await Broker.DeleteAsync(queue);
    }

    [Test]
    public async Task ShouldEndCancelledWithTheFinishedLines_WhenCancelledMidRun()
    {
        var jsonl = string.Join("\n", Enumerable.Range(0, 40).Select(i => BatchApi.ChatLine($"l{i}", $"line {i}", maxTokens: 400)));
        var id = (await Api.CreateBatchAsync(await Api.UploadAsync(jsonl))).Str("id")!;
        await Eventually.WaitUntilAsync(async () => (await Api.GetBatchAsync(id)).Int("request_counts.completed") > 0, 120, pollMilliseconds: 50);

        using var cancel = await Api.PostAsync($"/v1/batches/{id}/cancel", null);
        var cancelling = JsonNode.Parse(await cancel.Content.ReadAsStringAsync())!;
        var done = await Api.WaitForBatchAsync(id, TimeSpan.FromMinutes(1), "cancelled");

        Assert.That(cancelling.Str("status"), Is.AnyOf("cancelling", "cancelled"));
        var total = done.Int("request_counts.total");
        var completed = done.Int("request_counts.completed");
        Assert.That(total, Is.EqualTo(40));
        Assert.That(completed, Is.InRange(1, 39));
        Assert.That(completed + done.Int("request_counts.failed"), Is.EqualTo(40));
        var output = await Api.DownloadLinesAsync(done.Str("output_file_id"));
        var errors = await Api.DownloadLinesAsync(done.Str("error_file_id"));
        Assert.That(output, Has.Count.EqualTo(completed));
        Assert.That(errors.Select(e => e["error"]!.Str("code")), Is.All.EqualTo("batch_cancelled"));
        var ids = output.Concat(errors).Select(l => l.Str("custom_id")).ToList();
        Assert.That(ids, Is.Unique);
        Assert.That(ids, Has.Count.EqualTo(40));
    }

    [Test]
    public async Task ShouldStartASingleJobWithinSeconds_WhenABigBatchIsQueued()
    {
        var jsonl = string.Join("\n", Enumerable.Range(0, 400).Select(i => BatchApi.ChatLine($"b{i}", $"bulk {i}", maxTokens: 96)));
        var id = (await Api.CreateBatchAsync(await Api.UploadAsync(jsonl))).Str("id")!;
        await Eventually.WaitUntilAsync(async () => (await Api.GetBatchAsync(id)).Int("request_counts.completed") > 0, 120, pollMilliseconds: 50);

        var job = await Api.SubmitAsync(new { prompt = "I am interactive", max_tokens = 4 });
        var started = await Api.WaitForStatusAsync(job.Id, JobStatuses.Running, TimeSpan.FromSeconds(30));
        var batch = await Api.GetBatchAsync(id);

        Assert.That(started.StartedAt, Is.Not.Null);
        // Counted in lines, not seconds: only the lines already holding or prefetched for the 8 slots may end
        // before it starts; behind the batch it would wait for hundreds.
        await using var db = await TestDatabase.OpenAsync();
        var overtaken = await db.ScalarAsync($"SELECT count(*) FROM jobs WHERE batch_id = '{id}' AND finished_at > '{started.CreatedAt:O}' AND finished_at < '{started.StartedAt!.Value:O}'");
        Assert.That(overtaken, Is.LessThanOrEqualTo(24), "waited behind the batch");
        Assert.That(batch.Int("request_counts.completed"), Is.LessThan(300), "the batch was still far from done");

        using var cancel = await Api.PostAsync($"/v1/batches/{id}/cancel", null);
        await Api.WaitForBatchAsync(id, TimeSpan.FromMinutes(1), "cancelled");
    }

    [Test]
    public async Task ShouldLoseAndDuplicateNothing_WhenTheProducerRestartsDuringIngestion()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-restart";
        var settings = new Dictionary<string, string?>
        {
            ["Producer:IngestionChunkLines"] = "100",
            ["Producer:BatchWindowPerTenant"] = "5000", // every line released at once: the broker then holds each exactly once
        };
        // Slow ingestion down (150 ms a chunk of 100 lines), so that the stop lands mid-file.
        static void Slowly(Microsoft.Extensions.DependencyInjection.IServiceCollection services) =>
            Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<IBatchIngestionObserver, SlowIngestion>(services);
        var jsonl = string.Join("\n", Enumerable.Range(0, 3000).Select(i => BatchApi.ChatLine($"r{i}", $"restart {i}")));
        string id;
        try
        {
            await using (var first = await ProducerInstance.StartAsync(queue, settings, Slowly))
            {
                id = (await first.Client.CreateBatchAsync(await first.Client.UploadAsync(jsonl))).Str("id")!;
                await Eventually.WaitUntilAsync(async () => (await first.Client.GetBatchAsync(id)).Int("request_counts.total") >= 500, 60, pollMilliseconds: 50);
            } // stopped mid-ingestion

            await using var second = await ProducerInstance.StartAsync(queue, settings, Slowly);
            var running = await second.Client.WaitForBatchAsync(id, TimeSpan.FromMinutes(2), "in_progress");
            await Eventually.WaitUntilAsync(async () => await Broker.MessageCountAsync(queue + "-batch") == 3000, 60, pollMilliseconds: 50);

            Assert.That(running.Int("request_counts.total"), Is.EqualTo(3000));
            Assert.That(running.Int("request_counts.failed"), Is.Zero, "no line was taken for a duplicate");
            await using var db = new Npgsql.NpgsqlConnection(TestServices.Postgres);
            await db.OpenAsync();
            await using var check = new Npgsql.NpgsqlCommand(
                "SELECT count(*), count(DISTINCT custom_id), count(DISTINCT line_number), min(line_number), max(line_number) FROM jobs WHERE batch_id = $1", db);
            check.Parameters.AddWithValue(id);
            await using var reader = await check.ExecuteReaderAsync();
            await reader.ReadAsync();
            Assert.That(new[] { reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt32(3), reader.GetInt32(4) },
                Is.EqualTo(new long[] { 3000, 3000, 3000, 1, 3000 }));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldWorkWithTheOfficialOpenAiClient_WhenUploadingRunningAndDownloadingABatch()
    {
        var options = new OpenAIClientOptions { Endpoint = new Uri(Api.BaseAddress!, "/v1") };
        var openai = new OpenAIClient(new ApiKeyCredential("not-needed"), options);
        var fileClient = openai.GetOpenAIFileClient();
        var batchClient = openai.GetBatchClient();
        var jsonl = string.Join("\n", Enumerable.Range(0, 3).Select(i => BatchApi.ChatLine($"sdk{i}", $"sdk {i}", maxTokens: 6)));

        OpenAIFile file = await fileClient.UploadFileAsync(BinaryData.FromString(jsonl), "sdk.jsonl", FileUploadPurpose.Batch);
        var operation = await batchClient.CreateBatchAsync(
            BinaryContent.Create(BinaryData.FromObjectAsJson(new { input_file_id = file.Id, endpoint = "/v1/chat/completions", completion_window = "24h" })),
            waitUntilCompleted: false);
        JsonNode batch = null!;
        await Eventually.WaitUntilAsync(async () =>
        {
            batch = JsonNode.Parse((await batchClient.GetBatchAsync(operation.BatchId, options: null)).GetRawResponse().Content.ToString())!;
            return batch.Str("status") is "completed" or "failed";
        }, 120, pollMilliseconds: 200);
        var output = await fileClient.DownloadFileAsync(batch.Str("output_file_id")!);

        Assert.That(file.Id, Does.StartWith("file-"));
        Assert.That(file.SizeInBytes, Is.EqualTo(Encoding.UTF8.GetByteCount(jsonl)));
        Assert.That(batch.Str("status"), Is.EqualTo("completed"));
        var lines = output.Value.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.That(lines.Select(l => l.Str("custom_id")), Is.EquivalentTo(new[] { "sdk0", "sdk1", "sdk2" }));
        Assert.That(lines.Select(l => l["response"]!.Int("body.usage.completion_tokens")), Is.All.EqualTo(6));
    }

    private static StringContent JsonContent(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    private sealed class SlowIngestion : IBatchIngestionObserver
    {
        public Task ChunkWrittenAsync(string batchId, int lines, CancellationToken ct) => Task.Delay(150, ct);
    }
}
