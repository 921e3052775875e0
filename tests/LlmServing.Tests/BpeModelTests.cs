using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.ModelGen;
using LlmServing.Tests.Infrastructure;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>
/// The path real models take: a generated model with a GPT-2-style byte-level BPE vocabulary (as Qwen 2.5 and Llama 3
/// have). A grammar pins the text while the random weights choose how to split it into tokens, so the tests can see
/// multi-byte characters split across tokens and stop strings spanning tokens, end to end.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class BpeModelTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-bpe";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        var model = RandomLlamaModel.EnsureExists(Path.Combine(Path.GetTempPath(), "llmserving-tests", "random-tiny-bpe-v1.gguf"), ModelShape.Tiny with { Bpe = true });
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?> { ["Producer:ContextSize"] = "1024" });
        _worker = await WorkerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Inference:ModelPath"] = model,
            ["Inference:ContextSize"] = "4096",
        });
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    private static object Const(string text) => new
    {
        type = "json_schema",
        json_schema = new { name = "pinned", schema = new { @const = text } },
    };

    private async Task<JobResponse[]> RunAsync(Func<int, object> body, int count)
    {
        var accepted = await Task.WhenAll(Enumerable.Range(0, count).Select(i => _producer.Client.SubmitAsync(body(i))));
        var done = await Task.WhenAll(accepted.Select(a => _producer.Client.WaitForFinalAsync(a.Id)));
        Assert.That(done.Select(d => d.Status), Is.All.EqualTo(JobStatuses.Succeeded), string.Join("; ", done.Select(d => d.Error)));
        return done;
    }

    [Test]
    public async Task ShouldNeverBreakAMultiByteCharacter_WhenItIsSplitAcrossTokens()
    {
        var done = await RunAsync(i => new { prompt = $"say it {i}", max_tokens = 40, temperature = 1.0, seed = (uint)i, logprobs = true, response_format = Const("é中🙂") }, 24);

        Assert.That(done.Select(d => d.OutputText), Is.All.EqualTo("\"é中🙂\""));
        // Proof that some runs wrote a character in pieces: a token whose bytes are not whole UTF-8 characters.
        var split = done.Count(d => d.Logprobs!.Value.GetProperty("content").EnumerateArray()
            .Any(t => t.GetProperty("token").GetString()!.Contains('\uFFFD')));
        Assert.That(split, Is.GreaterThan(0), "at least one run split a character across tokens");
    }

    [Test]
    public async Task ShouldStop_WhenAStopStringSpansTwoTokens()
    {
        var done = await RunAsync(i => new { prompt = $"greet {i}", max_tokens = 40, temperature = 1.0, seed = (uint)i, logprobs = true, stop = new[] { "lo wo" }, response_format = Const("hello world") }, 12);

        Assert.That(done.Select(d => d.OutputText), Is.All.EqualTo("\"hel"));
        Assert.That(done.Select(d => d.FinishReason), Is.All.EqualTo("stop"));
        var spanning = done.Count(d => d.Logprobs!.Value.GetProperty("content").EnumerateArray().All(t => !t.GetProperty("token").GetString()!.Contains("lo wo")));
        Assert.That(spanning, Is.GreaterThan(0), "in some runs no single token held the whole stop string");
    }

    [Test]
    public async Task ShouldKeepSpecialTokenTextAsText_WhenAPromptContainsEndOfText()
    {
        var plain = (await RunAsync(_ => new { prompt = "x", max_tokens = 4, ignore_eos = true }, 1))[0];
        var special = (await RunAsync(_ => new { prompt = "x" + BpeVocabulary.EndOfText, max_tokens = 4, ignore_eos = true }, 1))[0];

        Assert.That(special.Usage!.PromptTokens - plain.Usage!.PromptTokens, Is.GreaterThan(3), "'<|endoftext|>' in a prompt is characters, not one control token");
        Assert.That(special.Usage.CompletionTokens, Is.EqualTo(4));
    }
}
