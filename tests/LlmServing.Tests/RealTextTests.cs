using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>
/// Real sentences through the whole path (API, RabbitMQ, worker, llama.cpp, PostgreSQL) with the trained TinyStories
/// 260K model: greedy output, stop strings ending on a word, seeds. Where random weights only allow token counts.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class RealTextTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-stories";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?> { ["Producer:ContextSize"] = "512" });
        _worker = await WorkerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Inference:ModelPath"] = TestServices.StoriesModelPath,
            ["Inference:ContextSize"] = "512",
            ["Inference:Slots"] = "4",
        });
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    private async Task<JobResponse> RunAsync(object body)
    {
        var accepted = await _producer.Client.SubmitAsync(body);
        var done = await _producer.Client.WaitForFinalAsync(accepted.Id);
        Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded), done.Error);
        return done;
    }

    [Test]
    public async Task ShouldTellTheKnownStory_WhenGreedyFromOnceUponATime()
    {
        var done = await RunAsync(new { prompt = "Once upon a time", max_tokens = 60, temperature = 0 });

        Assert.That(done.OutputText, Does.StartWith(", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball."));
        Assert.That(done.FinishReason, Is.EqualTo("length"));
        Assert.That(done.Usage!.CompletionTokens, Is.EqualTo(60));
    }

    [Test]
    public async Task ShouldEndOnAWord_WhenAStopStringIsHit()
    {
        var done = await RunAsync(new { prompt = "Tom had a red ball.", max_tokens = 40, temperature = 0, stop = new[] { "." } });

        Assert.That(done.OutputText, Is.EqualTo(" He liked to play with his toys"));
        Assert.That(done.FinishReason, Is.EqualTo("stop"));
    }

    [Test]
    public async Task ShouldRepeatTheText_WhenTheSameSeedIsGivenAndVaryWithAnother()
    {
        object Body(uint seed) => new { prompt = "Once upon a time", max_tokens = 40, temperature = 1.0, seed };

        var first = await RunAsync(Body(7));
        var again = await RunAsync(Body(7));
        var other = await Task.WhenAll(new uint[] { 8, 9, 10 }.Select(s => RunAsync(Body(s))));

        Assert.That(again.OutputText, Is.EqualTo(first.OutputText));
        Assert.That(other.Select(o => o.OutputText), Has.Some.Not.EqualTo(first.OutputText));
        Assert.That(first.OutputText, Does.Match(@"[a-z]+ [a-z]+"), "words, not noise");
    }

    [Test]
    public async Task ShouldMatchGreedy_WhenTopKIsOneAtAHighTemperature()
    {
        var greedy = await RunAsync(new { prompt = "Lily went to the park", max_tokens = 40, temperature = 0 });
        var topK = await RunAsync(new { prompt = "Lily went to the park", max_tokens = 40, temperature = 1.5, top_k = 1, seed = 3 });

        Assert.That(topK.OutputText, Is.EqualTo(greedy.OutputText));
    }

    [Test]
    public async Task ShouldNeverWriteABannedToken_WhenItsBiasIsMinus100()
    {
        var comma = CommaTokens();
        var bias = comma.ToDictionary(id => id.ToString(System.Globalization.CultureInfo.InvariantCulture), _ => -100f);
        var free = await RunAsync(new { prompt = "Once upon a time", max_tokens = 60, temperature = 0 });
        var banned = await RunAsync(new { prompt = "Once upon a time", max_tokens = 60, temperature = 0, logit_bias = bias });

        Assert.That(free.OutputText, Does.Contain(","), "without the bias the story has commas");
        Assert.That(banned.OutputText, Does.Not.Contain(","));
        Assert.That(banned.OutputText, Does.Contain(" there was a little girl"), "the rest of the story is still told");
    }

    [Test]
    public async Task ShouldFollowARawGrammar_WhenOneIsGiven()
    {
        const string grammar = """
            root ::= " " name " " [a-z ]{3,30} "."
            name ::= "Lily" | "Tom" | "Sue"
            """;
        var free = await RunAsync(new { prompt = "Once upon a time, there was a girl.", max_tokens = 40, temperature = 0 });
        var done = await RunAsync(new { prompt = "Once upon a time, there was a girl.", max_tokens = 40, temperature = 0, grammar });
        var seeded = await RunAsync(new { prompt = "Once upon a time, there was a girl.", max_tokens = 40, temperature = 1, seed = 5, grammar });

        Assert.That(free.OutputText, Does.Not.Match(@"^ (Lily|Tom|Sue) [a-z ]{3,30}\.$"), "the grammar, not the model, shapes it");
        Assert.That(done.OutputText, Does.Match(@"^ (Lily|Tom|Sue) [a-z ]{3,30}\.$"));
        Assert.That(seeded.OutputText, Does.Match(@"^ (Lily|Tom|Sue) [a-z ]{3,30}\.$"));
        Assert.That(done.FinishReason, Is.EqualTo("stop"), "a finished grammar ends the output");
    }

    [Test]
    public async Task ShouldFailTheJobWithTheReason_WhenABiasedTokenIsOutsideTheVocabulary()
    {
        var accepted = await _producer.Client.SubmitAsync(new { prompt = "Once upon a time", max_tokens = 5, logit_bias = new Dictionary<string, float> { ["100000"] = 5 } });
        var done = await _producer.Client.WaitForFinalAsync(accepted.Id);

        Assert.That(done.Status, Is.EqualTo(JobStatuses.Failed));
        Assert.That(done.Error, Does.Contain("token 100000, outside this model's vocabulary of 512 tokens"));
    }

    [Test]
    public async Task ShouldStopRepeatingItself_WhenPenaltiesAreHigh()
    {
        // Greedy TinyStories loops on "Lily" and "ball"; penalties over the last 64 tokens push it to other words.
        var plain = await RunAsync(new { prompt = "Once upon a time", max_tokens = 120, temperature = 0 });
        var penalised = await RunAsync(new { prompt = "Once upon a time", max_tokens = 120, temperature = 0, frequency_penalty = 2.0, presence_penalty = 2.0 });

        static double DistinctRatio(string text)
        {
            var words = text.Split([' ', '\n', '.', ','], StringSplitOptions.RemoveEmptyEntries);
            return (double)words.Distinct(StringComparer.OrdinalIgnoreCase).Count() / words.Length;
        }

        Assert.That(penalised.OutputText, Is.Not.EqualTo(plain.OutputText));
        Assert.That(DistinctRatio(penalised.OutputText!), Is.GreaterThan(DistinctRatio(plain.OutputText!)));
    }

    [Test]
    public async Task ShouldReturnLogprobsInOpenAisShape_WhenAskedWithTopAlternatives()
    {
        var done = await RunAsync(new { prompt = "Once upon a time", max_tokens = 20, temperature = 0, logprobs = true, top_logprobs = 5 });

        var content = done.Logprobs!.Value.GetProperty("content").EnumerateArray().ToList();
        Assert.That(content, Has.Count.EqualTo(20), "one entry per generated token");
        Assert.That(string.Concat(content.Select(c => c.GetProperty("token").GetString())), Is.EqualTo(done.OutputText));
        Assert.Multiple(() =>
        {
            foreach (var c in content)
            {
                var top = c.GetProperty("top_logprobs").EnumerateArray().ToList();
                Assert.That(top, Has.Count.EqualTo(5));
                Assert.That(top.Select(t => t.GetProperty("logprob").GetSingle()), Is.Ordered.Descending);
                Assert.That(top[0].GetProperty("token").GetString(), Is.EqualTo(c.GetProperty("token").GetString()), "greedy picks the most likely token");
                Assert.That(c.GetProperty("logprob").GetSingle(), Is.LessThanOrEqualTo(0f).And.EqualTo(top[0].GetProperty("logprob").GetSingle()).Within(1e-4));
                Assert.That(c.GetProperty("bytes").GetArrayLength(), Is.GreaterThan(0));
            }
        });
    }

    [Test]
    public async Task ShouldLeaveLogprobsOut_WhenNotAsked()
    {
        var done = await RunAsync(new { prompt = "Once upon a time", max_tokens = 5, temperature = 0 });

        Assert.That(done.Logprobs, Is.Null);
    }

    [Test]
    public async Task ShouldReturnFourChoicesWithThePromptCountedOnce_WhenNIsFour()
    {
        var one = await RunAsync(new { prompt = "Once upon a time", max_tokens = 24, temperature = 1.0, seed = 5u });
        var four = await RunAsync(new { prompt = "Once upon a time", max_tokens = 24, temperature = 1.0, seed = 5u, n = 4, logprobs = true });

        var choices = four.Choices!.Value.EnumerateArray().ToList();
        Assert.That(choices.Select(c => c.GetProperty("index").GetInt32()), Is.EqualTo(new[] { 0, 1, 2, 3 }));
        Assert.That(four.Usage!.PromptTokens, Is.EqualTo(one.Usage!.PromptTokens), "the prompt is counted once");
        Assert.That(four.Usage.CompletionTokens, Is.EqualTo(choices.Sum(c => c.GetProperty("completion_tokens").GetInt32())));
        Assert.That(choices[0].GetProperty("text").GetString(), Is.EqualTo(one.OutputText), "choice 0 is what n = 1 writes with the same seed");
        Assert.That(four.OutputText, Is.EqualTo(one.OutputText));
        Assert.That(choices.Select(c => c.GetProperty("text").GetString()).Distinct().Count(), Is.GreaterThan(1), "sampled separately");
        Assert.That(choices.Select(c => c.GetProperty("logprobs").GetProperty("content").GetArrayLength()),
            Is.EqualTo(choices.Select(c => c.GetProperty("completion_tokens").GetInt32())));
    }

    [Test]
    public async Task ShouldWriteEveryChoiceInBatchOutput_WhenALineAsksForThree()
    {
        var line = System.Text.Json.JsonSerializer.Serialize(new
        {
            custom_id = "three", method = "POST", url = "/v1/completions",
            body = new { prompt = "Tom had a red ball.", max_tokens = 10, temperature = 1.0, seed = 9u, n = 3 },
        });
        var batch = await _producer.Client.CreateBatchAsync(await _producer.Client.UploadAsync(line), "/v1/completions");
        var done = await _producer.Client.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromMinutes(1), "completed", "failed");

        var output = await _producer.Client.DownloadLinesAsync(done.Str("output_file_id"));
        var choices = output.Single()["response"]!["body"]!["choices"]!.AsArray();
        Assert.That(choices.Select(c => c!["index"]!.GetValue<int>()), Is.EqualTo(new[] { 0, 1, 2 }));
        Assert.That(choices.Select(c => c!["text"]!.GetValue<string>()), Is.All.Not.Empty);
    }

    /// <summary>The comma's token ids in this model: its own piece, and its byte token (the fallback).</summary>
    private static int[] CommaTokens()
    {
        using var weights = LLama.LLamaWeights.LoadFromFile(new LLama.Common.ModelParams(TestServices.StoriesModelPath) { GpuLayerCount = 0 });
        var without = weights.Tokenize("Once upon a time", false, false, System.Text.Encoding.UTF8);
        var with = weights.Tokenize("Once upon a time,", false, false, System.Text.Encoding.UTF8);
        Assert.That(with, Has.Length.EqualTo(without.Length + 1), "',' after a word is one token in this vocabulary");
        return [(int)with[^1], 3 + ',']; // byte tokens <0x00>..<0xFF> follow <unk>, <s>, </s>
    }
}
