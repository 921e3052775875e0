using LlmServing.Contracts;
using LlmServing.Producer.Jobs;
using LlmServing.Tests.Infrastructure;

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
}
