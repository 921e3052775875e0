using System.Text.Json;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>
/// Prefix reuse with the trained TinyStories model: jobs sharing a long opening start from a copy of its cached KV
/// sequence, report the reused tokens as <c>cached_tokens</c>, and write exactly the text a worker without the cache
/// writes, also when prefixes are evicted.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class PrefixReuseTests
{
    private const string Opening =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. " +
        "One day, she saw a big, red ball under a tree. She ran to the ball and picked it up. It was soft and round.";

    private static readonly string[] Endings =
    [
        " Then her friend Tom came and said",
        " Her mom called her and said",
        " Suddenly, a little dog ran to her and",
        " The sun was hot, so she",
    ];

    private static async Task<List<JobResponse>> RunAsync(string name, int maxCachedPrefixes, IEnumerable<object> bodies)
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-prefix-{name}";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:ContextSize"] = "512" });
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Inference:ModelPath"] = TestServices.StoriesModelPath,
                ["Inference:ContextSize"] = "512",
                ["Inference:Slots"] = "2",
                ["Inference:MaxCachedPrefixes"] = maxCachedPrefixes.ToString(),
            });
            var results = new List<JobResponse>();
            foreach (var body in bodies)
            {
                // One after another: each later job finds the earlier prompts cached (or not, without the cache).
                var accepted = await producer.Client.SubmitAsync(body);
                var done = await producer.Client.WaitForFinalAsync(accepted.Id);
                Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded), done.Error);
                results.Add(done);
            }

            return results;
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldWriteTheSameTextAndReportCachedTokens_WhenJobsShareALongOpening()
    {
        var bodies = Endings.Select(e => (object)new { prompt = Opening + e, max_tokens = 30, temperature = 0 })
            .Append(new { prompt = Opening + Endings[0], max_tokens = 30, temperature = 0.9, seed = 42u })
            .ToList();

        var reused = await RunAsync("on", 4, bodies);
        var plain = await RunAsync("off", 0, bodies);

        Assert.That(reused.Select(j => j.OutputText), Is.EqualTo(plain.Select(j => j.OutputText)), "reuse changes no output");
        Assert.That(plain.Select(j => j.Usage!.PromptTokensDetails!.CachedTokens), Is.All.Zero);
        Assert.That(reused[0].Usage!.PromptTokensDetails!.CachedTokens, Is.Zero, "the first job prefills everything");
        Assert.That(reused.Skip(1).Select(j => j.Usage!.PromptTokensDetails!.CachedTokens), Is.All.GreaterThanOrEqualTo(40),
            "later jobs start from the cached opening");
        Assert.That(reused.Select(j => j.Usage!.PromptTokens - j.Usage.PromptTokensDetails!.CachedTokens), Is.All.GreaterThanOrEqualTo(1),
            "at least one prompt token is always prefilled, for the logits of the first sample");
    }

    [Test]
    public async Task ShouldStayCorrect_WhenMorePrefixesArriveThanTheCacheHolds()
    {
        // Six openings, each twice, through a cache of two: entries are evicted and recreated along the way.
        var openings = Enumerable.Range(0, 6).Select(i => $"{Opening} Story number {i} begins here, and it is a long one.").ToList();
        var bodies = openings.Concat(openings).Select(o => (object)new { prompt = o + " The end came when", max_tokens = 12, temperature = 0 }).ToList();

        var reused = await RunAsync("evict-on", 2, bodies);
        var plain = await RunAsync("evict-off", 0, bodies);

        Assert.That(reused.Select(j => j.OutputText), Is.EqualTo(plain.Select(j => j.OutputText)));
        Assert.That(reused.Count(j => j.Usage!.PromptTokensDetails!.CachedTokens > 0), Is.GreaterThan(6), "the shared opening is reused throughout");
    }

    [Test]
    public async Task ShouldReportCachedTokensInBatchOutput_WhenLinesShareAnInstruction()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-prefix-batch";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:ContextSize"] = "512",
                ["Producer:FinalizeInterval"] = "00:00:00.200",
            });
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Inference:ModelPath"] = TestServices.StoriesModelPath,
                ["Inference:ContextSize"] = "512",
                ["Inference:Slots"] = "2",
            });
            var lines = Enumerable.Range(0, 6).Select(i => JsonSerializer.Serialize(new
            {
                custom_id = $"p{i}", method = "POST", url = "/v1/completions",
                body = new { prompt = Opening + Endings[i % Endings.Length], max_tokens = 8, temperature = 0, logprobs = true, top_logprobs = 2 },
            }));
            var batch = await producer.Client.CreateBatchAsync(await producer.Client.UploadAsync(string.Join("\n", lines)), "/v1/completions");
            var done = await producer.Client.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromMinutes(1), "completed", "failed");

            var output = await producer.Client.DownloadLinesAsync(done.Str("output_file_id"));
            var cached = output.Select(o => o["response"]!["body"]!["usage"]!["prompt_tokens_details"]!["cached_tokens"]!.GetValue<int>()).ToList();
            Assert.That(output, Has.Count.EqualTo(6));
            Assert.That(cached.Count(c => c >= 40), Is.GreaterThanOrEqualTo(4), string.Join(",", cached));
            Assert.That(output.Select(o => o["response"]!["body"]!["choices"]![0]!["logprobs"]!["content"]!.AsArray().Count), Is.All.EqualTo(8),
                "each line's logprobs, in OpenAI's shape");
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldEvictCachedPrefixes_WhenAnIdleWorkerGetsARequestThatNeedsTheirCells()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-prefix-idle-evict";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:ContextSize"] = "512" });
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Inference:ModelPath"] = TestServices.StoriesModelPath,
                ["Inference:ContextSize"] = "512",
                ["Inference:Slots"] = "2",
            });
            for (var i = 0; i < 3; i++)
            {
                // Three different long prompts, each kept in the cache afterwards (about 90 cells each).
                var cached = await producer.Client.SubmitAsync(new { prompt = $"Story {i}. {Opening}", max_tokens = 4, temperature = 0 });
                Assert.That((await producer.Client.WaitForFinalAsync(cached.Id)).Status, Is.EqualTo(JobStatuses.Succeeded));
            }

            // Idle now; this one needs 490 of the 512 cells, so the cached prompts must make room first.
            var big = await producer.Client.SubmitAsync(new { prompt = "Tom had a red ball.", max_tokens = 480, ignore_eos = true, temperature = 0 });
            var done = await producer.Client.WaitForFinalAsync(big.Id, TimeSpan.FromMinutes(2));

            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded), done.Error);
            Assert.That(done.Usage!.CompletionTokens, Is.EqualTo(480));
            Assert.That(worker.Scheduler.Counters.DecodeFailures, Is.Zero, "no decode ran out of KV cells");
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldFinishEveryChoice_WhenTheFirstChoiceEndsBeforeTheOthers()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-prefix-choices";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:ContextSize"] = "512" });
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Inference:ModelPath"] = TestServices.StoriesModelPath,
                ["Inference:ContextSize"] = "512",
                ["Inference:Slots"] = "4",
            });
            // Choices end at different times (a stop string at different places); the prompt stays reserved until the last.
            var accepted = await producer.Client.SubmitAsync(new { prompt = Opening, max_tokens = 60, temperature = 1.0, seed = 11u, n = 4, stop = new[] { "." } });
            var done = await producer.Client.WaitForFinalAsync(accepted.Id);

            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded), done.Error);
            Assert.That(done.Choices!.Value.GetArrayLength(), Is.EqualTo(4));
            Assert.That(worker.Scheduler.Counters.DecodeFailures, Is.Zero);
            Assert.That(worker.Scheduler.Counters.PeakReservedTokens, Is.LessThanOrEqualTo(512));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }
}
