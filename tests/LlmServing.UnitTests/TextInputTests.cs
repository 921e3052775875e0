using System.Text;
using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>What text can be stored, and which field says it cannot: pure, no servers.</summary>
public sealed class TextInputTests
{
    [TestCase("""{"prompt": "a\ud800b"}""", "prompt", "lone UTF-16 surrogate")]
    [TestCase("""{"prompt": "a\udc00"}""", "prompt", "lone UTF-16 surrogate")]
    [TestCase("""{"max_tokens": 3, "stop": ["x", "\ud800"]}""", "stop", "lone UTF-16 surrogate")]
    [TestCase("""{"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\u0000"}]}""", "messages[1].content", "NUL character")]
    [TestCase("""{"response_format": {"type": "json_schema", "json_schema": {"schema": {"properties": {"\ud800": {}}}}}}""", "response_format", "lone UTF-16 surrogate")]
    [TestCase("""{"webhook_url": "http://127.0.0.1/\ud800"}""", "webhook_url", "lone UTF-16 surrogate")]
    [TestCase("""{"\ud800": 1}""", "body", "lone UTF-16 surrogate")]
    public void ShouldNameTheField_WhenAStringCannotBeStored(string json, string field, string problem)
    {
        var found = TextInput.FirstUnstorable(Encoding.UTF8.GetBytes(json));

        Assert.That(found, Is.Not.Null);
        Assert.That(found!.Value.Field, Is.EqualTo(field));
        Assert.That(found.Value.Problem, Does.Contain(problem));
    }

    [TestCase("""{"prompt": "a surrogate pair \ud83d\ude42 is one character", "stop": ["\n"], "n": 1}""")]
    [TestCase("""{"messages": [{"role": "user", "content": "é中🙂"}], "nested": [[1, [2]], {"a": [null, true]}]}""")]
    [TestCase("""{"prompt": "malformed""")]
    public void ShouldFindNothing_WhenEveryStringCanBeStoredOrTheJsonIsMalformed(string json) =>
        Assert.That(TextInput.FirstUnstorable(Encoding.UTF8.GetBytes(json)), Is.Null);

    [Test]
    public void ShouldFindALoneSurrogateInAParsedElement_WithoutThrowing()
    {
        using var line = JsonDocument.Parse("""{"custom_id": "a", "body": {"messages": [{"content": "x\ud800"}]}}""");

        Assert.That(TextInput.HasNul(line.RootElement), Is.True);
        Assert.That(TextInput.Problem(line.RootElement), Does.Contain("lone UTF-16 surrogate"));
    }

    [TestCase("The prompt (900 tokens) plus max_tokens (8) does not fit the worker's context of 512 tokens.", "context_length_exceeded")]
    [TestCase("logit_bias names token 100000, outside this model's vocabulary of 512 tokens.", "invalid_request")]
    [TestCase("The grammar is not valid: A group is not closed", "invalid_request")]
    [TestCase("llama_decode failed (NoKvSlot) 3 times.", null)]
    [TestCase(null, null)]
    public void ShouldTellARequestErrorFromASystemError(string? error, string? code) =>
        Assert.That(JobErrors.RequestErrorCode(error), Is.EqualTo(code));
}
