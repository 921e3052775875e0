using System.ClientModel;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using OpenAI;
using OpenAI.Chat;

namespace LlmServing.Tests;

/// <summary>
/// OpenAI's synchronous endpoints through the queue, with the official OpenAI .NET client and with plain HTTP, on the
/// trained TinyStories model so that the answers hold real text.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class OpenAiEndpointTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-openai";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Producer:ContextSize"] = "512",
            ["Producer:ModelName"] = "stories260K",
        });
        _worker = await WorkerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Inference:ModelPath"] = TestServices.StoriesModelPath,
            ["Inference:ContextSize"] = "512",
        });
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue, _queue + "-batch");
    }

    [Test]
    public async Task ShouldAnswerTheOfficialClient_WhenItAsksForAChatCompletion()
    {
        var openai = new OpenAIClient(new ApiKeyCredential("not-needed"), new OpenAIClientOptions { Endpoint = new Uri(_producer.Client.BaseAddress!, "/v1") });
        var chat = openai.GetChatClient("stories260K");

        ChatCompletion completion = await chat.CompleteChatAsync(
            [new UserChatMessage("Tom had a red ball.")],
            new ChatCompletionOptions { MaxOutputTokenCount = 24, Temperature = 0 });

        Assert.That(completion.Content[0].Text, Does.Match("[a-z]+ [a-z]+"), "words from the trained model");
        Assert.That(completion.Usage.OutputTokenCount, Is.InRange(1, 24));
        Assert.That(completion.Usage.InputTokenCount, Is.GreaterThan(3));
        Assert.That(completion.Model, Is.EqualTo("stories260K"));
        Assert.That(completion.FinishReason, Is.AnyOf(ChatFinishReason.Stop, ChatFinishReason.Length));
    }

    [Test]
    public async Task ShouldTellTheKnownStory_WhenACompletionIsAskedOverPlainHttp()
    {
        using var response = await _producer.Client.PostAsJsonAsync("/v1/completions",
            new { model = "stories260K", prompt = "Once upon a time", max_tokens = 30, temperature = 0 });
        var body = await response.Content.ReadFromJsonAsync<JsonNode>();

        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.OK), body?.ToJsonString());
        Assert.That(body!["object"]!.GetValue<string>(), Is.EqualTo("text_completion"));
        Assert.That(body["choices"]![0]!["text"]!.GetValue<string>(), Does.StartWith(", there was a little girl named Lily."));
        Assert.That(body["choices"]![0]!["finish_reason"]!.GetValue<string>(), Is.EqualTo("length"));
        Assert.That(body["usage"]!["completion_tokens"]!.GetValue<int>(), Is.EqualTo(30));
    }

    [Test]
    public async Task ShouldListTheModel()
    {
        var models = await _producer.Client.GetFromJsonAsync<JsonNode>("/v1/models");

        Assert.That(models!["data"]![0]!["id"]!.GetValue<string>(), Is.EqualTo("stories260K"));
    }

    [Test]
    public async Task ShouldRefuseNamingTheField_WhenStreamingIsAsked()
    {
        using var response = await _producer.Client.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new[] { new { role = "user", content = "hi" } }, stream = true });

        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.UnprocessableEntity));
        Assert.That(await response.Content.ReadAsStringAsync(), Does.Contain("stream"));
    }

    [Test]
    public async Task ShouldAnswer503WithRetryAfterAndCancelTheJob_WhenNoWorkerStartsItInTime()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-openai-idle";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:SyncStartTimeout"] = "00:00:01" });
            using var response = await producer.Client.PostAsJsonAsync("/v1/completions", new { prompt = "Anyone there?", max_tokens = 4 });

            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
            Assert.That(response.Headers.RetryAfter, Is.Not.Null);
            Assert.That(await LatestStatusAsync(queue), Is.EqualTo(JobStatuses.Cancelled), "a worker starting later does not run it");
        }
        finally
        {
            await Broker.DeleteAsync(queue, queue + "-batch");
        }
    }

    [Test]
    public async Task ShouldCancelTheJob_WhenTheClientDisconnects()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-openai-leave";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue);
            using var leave = new CancellationTokenSource(TimeSpan.FromSeconds(1.5));

            await Assert.ThatAsync(() =>
                producer.Client.PostAsJsonAsync("/v1/completions", new { prompt = "I will not wait", max_tokens = 4 }, leave.Token), Throws.InstanceOf<OperationCanceledException>());
            await Eventually.WaitUntilAsync(async () => await LatestStatusAsync(queue) == JobStatuses.Cancelled, timeoutSeconds: 10);
        }
        finally
        {
            await Broker.DeleteAsync(queue, queue + "-batch");
        }
    }

    private static async Task<string?> LatestStatusAsync(string queue)
    {
        await using var db = await TestDatabase.OpenAsync();
        await using var command = db.CreateCommand();
        command.CommandText = $"SELECT status FROM jobs WHERE queue = '{queue}' ORDER BY created_at DESC LIMIT 1";
        return (string?)await command.ExecuteScalarAsync();
    }
}
