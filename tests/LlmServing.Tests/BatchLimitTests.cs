using System.Text;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// OpenAI's limit of requests per batch (<c>Producer:MaxBatchRequests</c>, 50,000): a longer file fails the batch with
/// that error before any line runs, and no line of it stays queued. No worker: nothing may run.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class BatchLimitTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-batchlimit";

    [OneTimeTearDown]
    public async Task CleanUpAsync() => await Broker.DeleteAsync(_queue, _queue + "-batch");

    private static string Lines(int count)
    {
        var text = new StringBuilder();
        for (var i = 0; i < count; i++)
        {
            text.Append("{\"custom_id\": \"r").Append(i).Append("\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", ")
                .Append("\"body\": {\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 1}}\n");
        }

        return text.ToString();
    }

    [Test]
    public async Task ShouldFailTheBatchWithTheLimitError_WhenTheFileHas50001Requests()
    {
        await using var producer = await ProducerInstance.StartAsync(_queue);
        var file = await producer.Client.UploadAsync(Lines(50_001));

        var created = await producer.Client.CreateBatchAsync(file);
        var batch = await producer.Client.WaitForBatchAsync(created["id"]!.GetValue<string>(), TimeSpan.FromMinutes(2), "failed", "in_progress");

        Assert.That(batch["status"]!.GetValue<string>(), Is.EqualTo("failed"), batch.ToJsonString());
        var error = batch["errors"]!["data"]![0]!;
        Assert.That(error["code"]!.GetValue<string>(), Is.EqualTo("too_many_requests"));
        Assert.That(error["message"]!.GetValue<string>(), Does.Contain("more than 50000 requests"));
        Assert.That(await QueuedLinesAsync(batch["id"]!.GetValue<string>()), Is.Zero, "no line of it waits to run");
    }

    [Test]
    public async Task ShouldCancelTheLinesAlreadyWritten_WhenTheLimitIsPassedAfterSomeChunks()
    {
        await using var producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Producer:MaxBatchRequests"] = "5",
            ["Producer:IngestionChunkLines"] = "2",
        });

        var atLimit = await producer.Client.CreateBatchAsync(await producer.Client.UploadAsync(Lines(5)));
        var over = await producer.Client.CreateBatchAsync(await producer.Client.UploadAsync(Lines(6)));
        var accepted = await producer.Client.WaitForBatchAsync(atLimit["id"]!.GetValue<string>(), TimeSpan.FromSeconds(30), "in_progress", "failed");
        var refused = await producer.Client.WaitForBatchAsync(over["id"]!.GetValue<string>(), TimeSpan.FromSeconds(30), "failed", "in_progress");

        Assert.That(accepted["status"]!.GetValue<string>(), Is.EqualTo("in_progress"), "5 requests are within a limit of 5");
        Assert.That(refused["status"]!.GetValue<string>(), Is.EqualTo("failed"));
        Assert.That(refused["errors"]!["data"]![0]!["code"]!.GetValue<string>(), Is.EqualTo("too_many_requests"));
        var id = refused["id"]!.GetValue<string>();
        Assert.That(await TestDatabase.ScalarAsync($"SELECT count(*) FROM jobs WHERE batch_id = '{id}'"), Is.EqualTo(4), "two chunks were written before the sixth line");
        Assert.That(await QueuedLinesAsync(id), Is.Zero, "and they were cancelled, not left queued");

        using var cancel = await producer.Client.PostAsync($"/v1/batches/{atLimit["id"]!.GetValue<string>()}/cancel", null);
    }

    private static Task<long> QueuedLinesAsync(string batchId) =>
        TestDatabase.ScalarAsync($"SELECT count(*) FROM jobs WHERE batch_id = '{batchId}' AND status = 'queued'");
}
