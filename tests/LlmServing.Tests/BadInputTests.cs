using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>Every rejected request gets its status code and an RFC 7807 problem that says what is wrong.</summary>
[TestFixture]
[NonParallelizable]
public sealed class BadInputTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-badinput";
    private ProducerInstance _producer = null!;

    [OneTimeSetUp]
    public async Task StartAsync() =>
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Producer:ContextSize"] = "1024",
            ["Producer:MaxRequestBytes"] = "65536",
        });

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    private static IEnumerable<TestCaseData> InvalidBodies()
    {
        TestCaseData Case(string name, string json, int status, string field, string message) =>
            new TestCaseData(json, status, field, message).SetName($"ShouldReject{status}_When{name}");

        yield return Case("NeitherPromptNorMessages", """{"max_tokens": 5}""", 422, "prompt", "neither was given");
        yield return Case("BothPromptAndMessages", """{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}""", 422, "prompt", "not both");
        yield return Case("PromptIsEmpty", """{"prompt": ""}""", 422, "prompt", "'prompt' is empty");
        yield return Case("MessagesAreEmpty", """{"messages": []}""", 422, "messages", "at least one message");
        yield return Case("PromptIsLongerThanTheContextAllows", $$"""{"prompt": "{{new string('a', 8193)}}"}""", 422, "prompt", "limit for a context of 1024 tokens is 8192");
        yield return Case("MaxTokensIsZero", """{"prompt": "a", "max_tokens": 0}""", 422, "max_tokens", "between 1 and 1023");
        yield return Case("MaxTokensExceedsTheContext", """{"prompt": "a", "max_tokens": 1024}""", 422, "max_tokens", "between 1 and 1023");
        yield return Case("TemperatureIsAboveTwo", """{"prompt": "a", "temperature": 2.5}""", 422, "temperature", "between 0 and 2");
        yield return Case("TemperatureIsNegative", """{"prompt": "a", "temperature": -0.1}""", 422, "temperature", "between 0 and 2");
        yield return Case("TopPIsZero", """{"prompt": "a", "top_p": 0}""", 422, "top_p", "greater than 0 and at most 1");
        yield return Case("TopPIsAboveOne", """{"prompt": "a", "top_p": 1.5}""", 422, "top_p", "greater than 0 and at most 1");
        yield return Case("RoleIsUnknown", """{"messages": [{"role": "wizard", "content": "hi"}]}""", 422, "messages[0].role", "Unknown role 'wizard'");
        yield return Case("ContentIsNotAString", """{"messages": [{"role": "user", "content": 5}]}""", 422, "messages[0].content", "must be a string or a non-empty array of text parts");
        yield return Case("ContentPartsAreEmpty", """{"messages": [{"role": "user", "content": []}]}""", 422, "messages[0].content", "non-empty array of text parts");
        yield return Case("AContentPartHasNoText", """{"messages": [{"role": "user", "content": [{"type": "text"}]}]}""", 422, "messages[0].content[0]", "A content part is");
        yield return Case("StopIsANumber", """{"prompt": "a", "stop": 3}""", 422, "stop", "string or an array of strings");
        yield return Case("TooManyStopStrings", """{"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}""", 422, "stop", "At most 4");
        yield return Case("QueueTimeoutIsZero", """{"prompt": "a", "queue_timeout_seconds": 0}""", 422, "queue_timeout_seconds", "between 1 and 604800");
        yield return Case("GenerationLimitIsOverAnHour", """{"prompt": "a", "max_generation_seconds": 5000}""", 422, "max_generation_seconds", "between 1 and 3600");
        yield return Case("NineChoicesAreAsked", """{"prompt": "a", "n": 9}""", 422, "n", "between 1 and 8");
        yield return Case("ToolsAreGiven", """{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}""", 422, "tools", "tool and function calling");
        yield return Case("AResponseFormatTypeIsUnknown", """{"prompt": "a", "response_format": {"type": "xml"}}""", 422, "response_format", "\"json_object\" or \"json_schema\"");
        yield return Case("ASchemaUsesAnUnsupportedKeyword", """{"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}}}}""", 422, "response_format", "keyword 'pattern' is not supported");
        yield return Case("ASchemaHasNoName", """{"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string"}}}}""", 422, "response_format", "json_schema.name");
        yield return Case("IgnoreEosMeetsAJsonFormat", """{"prompt": "a", "ignore_eos": true, "response_format": {"type": "json_object"}}""", 422, "ignore_eos", "must be able to end");
        yield return Case("AGrammarNests15000GroupsDeep", $$"""{"prompt": "a", "grammar": "root ::= {{new string('(', 15_000)}}\"a\"{{new string(')', 15_000)}}"}""", 422, "grammar", "nested more than 100 deep");
        yield return Case("ASchemaStringIsLongerThanLlamaCppRepeats", """{"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "minLength": 2500}}}}""", 422, "response_format", "'minLength' can be at most 1999");
        yield return Case("AGrammarOpens25600StacksAtOnce", System.Text.Json.JsonSerializer.Serialize(new
        {
            prompt = "a",
            grammar = "root ::= (" + string.Join(" | ", Enumerable.Range(0, 160).Select(i => $"a{i}")) + ")+\n"
                      + string.Concat(Enumerable.Range(0, 160).Select(i => $"a{i} ::= b\n"))
                      + "b ::= " + string.Join(" | ", Enumerable.Range(0, 160).Select(j => $"\"w{j}\"")),
        }), 422, "grammar", "too ambiguous");
        yield return Case("AGrammarDoesNotParse", """{"prompt": "a", "grammar": "root ::= (\"x\""}""", 422, "grammar", "group is not closed (line 1, column 10)");
        yield return Case("AGrammarIsLeftRecursive", """{"prompt": "a", "grammar": "root ::= root \"x\" | \"y\""}""", 422, "grammar", "'root' is left-recursive");
        yield return Case("AGrammarMeetsAJsonFormat", """{"prompt": "a", "grammar": "root ::= \"x\"", "response_format": {"type": "json_object"}}""", 422, "grammar", "not both");
        yield return Case("IgnoreEosMeetsAGrammar", """{"prompt": "a", "ignore_eos": true, "grammar": "root ::= \"x\""}""", 422, "ignore_eos", "must be able to end");
        yield return Case("AWebhookTargetIsLoopback", """{"prompt": "a", "webhook_url": "http://127.0.0.1:9/hook"}""", 422, "webhook_url", "non-public address (127.0.0.1)");
        yield return Case("AWebhookTargetIsNotHttp", """{"prompt": "a", "webhook_url": "gopher://127.0.0.1/"}""", 422, "webhook_url", "absolute http:// or https:// URL");
        yield return Case("StreamingIsAsked", """{"prompt": "a", "stream": true}""", 422, "stream", "whole result");
        yield return Case("LogprobsIsANumber", """{"prompt": "a", "logprobs": 5}""", 422, "logprobs", "true or false");
        yield return Case("TopLogprobsIsOver20", """{"prompt": "a", "logprobs": true, "top_logprobs": 21}""", 422, "top_logprobs", "between 0 and 20");
        yield return Case("TopLogprobsComeWithoutLogprobs", """{"prompt": "a", "top_logprobs": 3}""", 422, "top_logprobs", "needs 'logprobs': true");
        yield return Case("AFieldIsUnknown", """{"prompt": "a", "frobnicate": 1}""", 422, "frobnicate", "not a supported field");
        yield return Case("TopKIsNegative", """{"prompt": "a", "top_k": -1}""", 422, "top_k", "between 0 (off) and 1000");
        yield return Case("MinPIsAboveOne", """{"prompt": "a", "min_p": 1.5}""", 422, "min_p", "between 0 and 1");
        yield return Case("FrequencyPenaltyIsAboveTwo", """{"prompt": "a", "frequency_penalty": 2.5}""", 422, "frequency_penalty", "between -2 and 2");
        yield return Case("RepetitionPenaltyIsZero", """{"prompt": "a", "repetition_penalty": 0}""", 422, "repetition_penalty", "greater than 0");
        yield return Case("ALogitBiasKeyIsNotATokenId", """{"prompt": "a", "logit_bias": {"hello": 1}}""", 422, "logit_bias", "token ids");
        yield return Case("ALogitBiasIsOver100", """{"prompt": "a", "logit_bias": {"5": 101}}""", 422, "logit_bias", "between -100 and 100");
        yield return Case("MaxTokensAndMaxCompletionTokensDisagree", """{"prompt": "a", "max_tokens": 5, "max_completion_tokens": 6}""", 422, "max_completion_tokens", "disagree");
        yield return Case("JsonIsMalformed", """{"prompt": "a",""", 400, "", "not a valid job request");
        yield return Case("MaxTokensIsAString", """{"prompt": "a", "max_tokens": "ten"}""", 400, "", "$.max_tokens");
        yield return Case("BodyIsNotAnObject", """[1, 2]""", 400, "", "not a valid job request");
    }

    [TestCaseSource(nameof(InvalidBodies))]
    public async Task ShouldRejectWithProblemDetails(string json, int status, string field, string message)
    {
        using var response = await _producer.Client.PostAsync("/v1/jobs", new StringContent(json, Encoding.UTF8, "application/json"));

        var problem = await ReadProblemAsync(response, status);
        var text = field.Length > 0
            ? problem.GetProperty("errors").GetProperty(field)[0].GetString()
            : problem.GetProperty("detail").GetString();
        Assert.That(text, Does.Contain(message));
    }

    [Test]
    public async Task ShouldReject415_WhenContentTypeIsNotJson()
    {
        using var response = await _producer.Client.PostAsync("/v1/jobs", new StringContent("""{"prompt": "a"}""", Encoding.UTF8, "text/plain"));

        var problem = await ReadProblemAsync(response, 415);
        Assert.That(problem.GetProperty("detail").GetString(), Does.Contain("application/json"));
    }

    [Test]
    public async Task ShouldReject413_WhenBodyIsLargerThanTheLimit()
    {
        var json = $$"""{"prompt": "{{new string('a', 70_000)}}"}""";
        using var response = await _producer.Client.PostAsync("/v1/jobs", new StringContent(json, Encoding.UTF8, "application/json"));

        var problem = await ReadProblemAsync(response, 413);
        Assert.That(problem.GetProperty("detail").GetString(), Does.Contain("at most 65536 bytes"));
    }

    [Test]
    public async Task ShouldReject413_WhenChunkedBodyIsLargerThanTheLimit()
    {
        var content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes($$"""{"prompt": "{{new string('a', 70_000)}}"}""")));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/jobs") { Content = content };
        request.Headers.TransferEncodingChunked = true;

        using var response = await _producer.Client.SendAsync(request);

        await ReadProblemAsync(response, 413);
    }

    [Test]
    public async Task ShouldReturn404_WhenJobIdIsUnknown()
    {
        var id = Guid.NewGuid();
        using var response = await _producer.Client.GetAsync($"/v1/jobs/{id}");

        var problem = await ReadProblemAsync(response, 404);
        Assert.That(problem.GetProperty("detail").GetString(), Does.Contain(id.ToString()));
    }

    [Test]
    public async Task ShouldReturn404_WhenJobIdIsNotAGuid()
    {
        using var response = await _producer.Client.GetAsync("/v1/jobs/not-a-job");

        await ReadProblemAsync(response, 404);
    }

    [Test]
    public async Task ShouldReturn404_WhenCancellingAnUnknownJob()
    {
        using var response = await _producer.Client.PostAsync($"/v1/jobs/{Guid.NewGuid()}/cancel", null);

        await ReadProblemAsync(response, 404);
    }

    [Test]
    public async Task ShouldReject400_WhenWaitIsOutOfRange()
    {
        var accepted = await _producer.Client.SubmitAsync(new { prompt = "wait", max_tokens = 2 });
        using var response = await _producer.Client.GetAsync($"/v1/jobs/{accepted.Id}?wait=100000");

        var problem = await ReadProblemAsync(response, 400);
        Assert.That(problem.GetProperty("detail").GetString(), Does.Contain("seconds from 0 to 60"));
    }

    private static async Task<JsonElement> ReadProblemAsync(HttpResponseMessage response, int status)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(status), body);
        Assert.That(response.Content.Headers.ContentType?.MediaType, Is.EqualTo("application/problem+json"), body);
        var problem = JsonDocument.Parse(body).RootElement;
        Assert.That(problem.GetProperty("status").GetInt32(), Is.EqualTo(status));
        Assert.That(problem.GetProperty("title").GetString(), Is.Not.Empty);
        return problem;
    }

    [Test]
    public async Task ShouldAcceptHarmlessOpenAiFields_WhenTheyAskForNothingThisSystemLacks()
    {
        const string json = """
            {"prompt": "a", "model": "any", "user": "u-1", "store": false, "metadata": {"k": "v"}, "n": 1, "stream": false,
             "logprobs": false, "response_format": {"type": "text"}, "max_completion_tokens": 3, "top_k": 40, "min_p": 0.05,
             "frequency_penalty": 0.5, "presence_penalty": 0.5, "repetition_penalty": 1.1, "logit_bias": {"5": -100}}
            """;
        using var response = await _producer.Client.PostAsync("/v1/jobs", new StringContent(json, Encoding.UTF8, "application/json"));

        Assert.That((int)response.StatusCode, Is.EqualTo(202), await response.Content.ReadAsStringAsync());
    }
}
