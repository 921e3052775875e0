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
    private readonly EnginePacer _pacer = new();

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
            // The trained model is tiny and fast: report progress often, so that streams see text before the end.
            ["Inference:ProgressInterval"] = "00:00:00.010",
        }, _pacer.Register);
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
    public async Task ShouldAnswerAsToASystemMessage_WhenTheOfficialClientSendsADeveloperMessageAndContentParts()
    {
        // What the OpenAI SDKs send for newer models: the system prompt as a 'developer' message, and content as parts.
        // Both were refused (422); they now render as the system message and the parts' text joined by newlines.
        var openai = new OpenAIClient(new ApiKeyCredential("not-needed"), new OpenAIClientOptions { Endpoint = new Uri(_producer.Client.BaseAddress!, "/v1") });
        var chat = openai.GetChatClient("stories260K");
#pragma warning disable OPENAI001 // DeveloperChatMessage is marked for evaluation in the .NET client; the wire shape is stable
        var developer = new DeveloperChatMessage("Tell a story.");
#pragma warning restore OPENAI001
        ChatCompletion completion = await chat.CompleteChatAsync(
            [developer, new UserChatMessage(ChatMessageContentPart.CreateTextPart("Tom had a red ball."), ChatMessageContentPart.CreateTextPart("He"))],
            new ChatCompletionOptions { MaxOutputTokenCount = 24, Temperature = 0 });

        using var plain = await _producer.Client.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = "stories260K",
            messages = new object[] { new { role = "system", content = "Tell a story." }, new { role = "user", content = "Tom had a red ball.\nHe" } },
            max_tokens = 24,
            temperature = 0,
        });
        var expected = (await plain.Content.ReadFromJsonAsync<JsonObject>())!["choices"]![0]!["message"]!["content"]!.GetValue<string>();

        Assert.That(completion.Content[0].Text, Is.EqualTo(expected).And.Not.Empty, "the same prompt as system + one string");
    }

    [Test]
    public async Task ShouldNameThePart_WhenAContentPartIsNotText()
    {
        using var response = await _producer.Client.PostAsJsonAsync("/v1/chat/completions", new
        {
            messages = new object[]
            {
                new { role = "user", content = new object[] { new { type = "text", text = "Look:" }, new { type = "image_url", image_url = new { url = "data:image/png;base64,AA==" } } } },
            },
            max_tokens = 4,
        });
        var body = await response.Content.ReadAsStringAsync();

        Assert.That((int)response.StatusCode, Is.EqualTo(422), body);
        Assert.That(body, Does.Contain("messages[0].content[1]").And.Contain("'image_url' are not supported"));
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
    public async Task ShouldStreamTheSameTextAsWithoutStreaming_WhenTheOfficialClientStreams()
    {
        var openai = new OpenAIClient(new ApiKeyCredential("not-needed"), new OpenAIClientOptions { Endpoint = new Uri(_producer.Client.BaseAddress!, "/v1") });
        var chat = openai.GetChatClient("stories260K");
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 40, Temperature = 0 };
        ChatCompletion whole = await chat.CompleteChatAsync([new UserChatMessage("Lily went to the park.")], options);

        var text = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("Lily went to the park.")], options))
        {
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
            }

            finish ??= update.FinishReason;
        }

        Assert.That(text.ToString(), Is.EqualTo(whole.Content[0].Text));
        Assert.That(finish, Is.EqualTo(whole.FinishReason));
    }

    [Test]
    public async Task ShouldStreamCompletionChunksEndingInDone_WhenStreamIsTrueOverPlainHttp()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = JsonContent.Create(new
            {
                prompt = "Once upon a time, in pieces", max_tokens = 100, temperature = 0, ignore_eos = true, stream = true,
                stream_options = new { include_usage = true },
            }),
        };
        // Each step of this job takes longer than the progress interval, so every token is reported as it comes.
        using var slow = _pacer.Slow("in pieces", TimeSpan.FromMilliseconds(15));
        using var response = await _producer.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var events = new List<string>();
        await foreach (var e in SseReader.EventsAsync(response))
        {
            events.Add(e.Data);
        }

        var chunks = events.Where(d => d != "[DONE]").Select(d => JsonNode.Parse(d)!).ToList();
        var text = string.Concat(chunks.Where(c => c["choices"]!.AsArray().Count > 0).Select(c => c["choices"]![0]!["text"]!.GetValue<string>()));

        Assert.That(response.Content.Headers.ContentType!.MediaType, Is.EqualTo("text/event-stream"));
        Assert.That(events[^1], Is.EqualTo("[DONE]"));
        Assert.That(chunks.Count(c => c["choices"]!.AsArray().Count > 0 && c["choices"]![0]!["text"]!.GetValue<string>().Length > 0), Is.GreaterThan(1),
            "the text arrives in pieces while it is generated");
        Assert.That(text, Does.Match("^[ ,a-z]+ [a-z]+"), "words from the trained model");
        Assert.That(chunks[^1]["usage"]!["completion_tokens"]!.GetValue<int>(), Is.EqualTo(100));
    }

    [Test]
    public async Task ShouldStreamAJobsTextThenTheJob_WhenFollowingItsStream()
    {
        using var slow = _pacer.Slow("followed", TimeSpan.FromMilliseconds(15));
        var accepted = await _producer.Client.SubmitAsync(new { prompt = "Once upon a time, followed", max_tokens = 100, temperature = 0, ignore_eos = true });
        using var response = await _producer.Client.GetAsync($"/v1/jobs/{accepted.Id}/stream", HttpCompletionOption.ResponseHeadersRead);
        var deltas = new List<SseReader.Event>();
        SseReader.Event? done = null;
        await foreach (var e in SseReader.EventsAsync(response))
        {
            if (e.Name == "delta")
            {
                deltas.Add(e);
            }
            else if (e.Name == "done")
            {
                done = e;
            }
        }

        var job = JsonNode.Parse(done!.Data)!;
        var text = string.Concat(deltas.Select(d => JsonNode.Parse(d.Data)!["text"]!.GetValue<string>()));

        Assert.That(deltas, Has.Count.GreaterThan(1), "token text arrives while the job runs");
        Assert.That(job["status"]!.GetValue<string>(), Is.EqualTo(JobStatuses.Succeeded));
        Assert.That(text, Is.EqualTo(job["output_text"]!.GetValue<string>()));
        Assert.That(deltas.Select(d => int.Parse(d.Id!)), Is.Ordered.Ascending);
        Assert.That(int.Parse(deltas[^1].Id!), Is.EqualTo(text.Length));
    }

    [Test]
    public async Task ShouldSendOnlyTheRest_WhenAClientReconnectsWithLastEventId()
    {
        // Held after its first tokens until the client has read one event and dropped the connection: the rest is
        // generated while nobody listens.
        // Its steps are slower than the progress interval, so the tokens before the hold have been reported.
        using var slow = _pacer.Slow("reconnects", TimeSpan.FromMilliseconds(15));
        using var hold = _pacer.HoldWhen("reconnects", afterTokens: 2);
        var accepted = await _producer.Client.SubmitAsync(new { prompt = "Once upon a time, reconnects", max_tokens = 100, temperature = 0, ignore_eos = true });
        SseReader.Event first;
        using (var response = await _producer.Client.GetAsync($"/v1/jobs/{accepted.Id}/stream", HttpCompletionOption.ResponseHeadersRead))
        {
            await using var events = SseReader.EventsAsync(response).GetAsyncEnumerator();
            Assert.That(await events.MoveNextAsync(), Is.True);
            first = events.Current; // then the connection drops
        }

        hold.Release();

        using var again = new HttpRequestMessage(HttpMethod.Get, $"/v1/jobs/{accepted.Id}/stream");
        again.Headers.Add("Last-Event-ID", first.Id);
        using var resumed = await _producer.Client.SendAsync(again, HttpCompletionOption.ResponseHeadersRead);
        var rest = new System.Text.StringBuilder();
        string? output = null;
        await foreach (var e in SseReader.EventsAsync(resumed))
        {
            if (e.Name == "delta")
            {
                rest.Append(JsonNode.Parse(e.Data)!["text"]!.GetValue<string>());
            }
            else if (e.Name == "done")
            {
                output = JsonNode.Parse(e.Data)!["output_text"]!.GetValue<string>();
            }
        }

        Assert.That(first.Name, Is.EqualTo("delta"));
        Assert.That(JsonNode.Parse(first.Data)!["text"]!.GetValue<string>() + rest, Is.EqualTo(output), "nothing missed, nothing repeated");
    }

    [Test]
    public async Task ShouldAnswer400ContextLengthExceeded_WhenThePromptDoesNotFitTheWorkersContext()
    {
        // About 1,000 tokens: under the Producer's character bound for a context of 512, over the worker's context.
        var prompt = string.Concat(Enumerable.Repeat("a ", 1000));
        using var response = await _producer.Client.PostAsJsonAsync("/v1/completions", new { prompt, max_tokens = 8 });
        var body = await response.Content.ReadFromJsonAsync<JsonNode>();

        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest), body?.ToJsonString());
        Assert.That(body!["error"]!["code"]!.GetValue<string>(), Is.EqualTo("context_length_exceeded"));
        Assert.That(body["error"]!["type"]!.GetValue<string>(), Is.EqualTo("invalid_request_error"));
    }

    [Test]
    public async Task ShouldAnswer400_WhenALogitBiasTokenIsOutsideTheVocabulary()
    {
        using var response = await _producer.Client.PostAsJsonAsync("/v1/chat/completions", new
        {
            messages = new[] { new { role = "user", content = "Tom had a red ball." } },
            max_tokens = 4,
            logit_bias = new Dictionary<string, int> { ["100000"] = 5 },
        });
        var body = await response.Content.ReadFromJsonAsync<JsonNode>();

        Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest), body?.ToJsonString());
        Assert.That(body!["error"]!["message"]!.GetValue<string>(), Does.Contain("outside this model's vocabulary"));
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
