using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// The whole path for real: HTTP -> PostgreSQL -> RabbitMQ -> worker (llama.cpp on the generated model) ->
/// PostgreSQL -> HTTP. One Producer and one worker (8 slots, 4096-token context) serve the fixture.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class JobLifecycleTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-lifecycle";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;
    private readonly EnginePacer _pacer = new();

    private HttpClient Api => _producer.Client;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue);
        await _producer.QueueDeclared.WaitAsync(TimeSpan.FromSeconds(30));
        _worker = await WorkerInstance.StartAsync(_queue, services: _pacer.Register);
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    [Test]
    public async Task ShouldSucceedWithOutputAndTokenCounts_WhenJobSubmittedOverHttp()
    {
        var accepted = await Api.SubmitAsync(new { prompt = "Summarise the queue worker result.", max_tokens = 24 });
        Assert.That(accepted.Status, Is.AnyOf(JobStatuses.Queued, JobStatuses.Running, JobStatuses.Succeeded));

        var job = await Api.WaitForFinalAsync(accepted.Id);

        Assert.Multiple(() =>
        {
            Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded), job.Error);
            Assert.That(job.OutputText, Is.Not.Null.And.Not.Empty);
            Assert.That(job.Usage!.PromptTokens, Is.GreaterThan(1));
            Assert.That(job.Usage.CompletionTokens, Is.EqualTo(24));
            Assert.That(job.Usage.TotalTokens, Is.EqualTo(job.Usage.PromptTokens + 24));
            Assert.That(job.FinishReason, Is.EqualTo("length"));
            Assert.That(job.Attempts, Is.EqualTo(1));
            Assert.That(job.QueuedAt, Is.Not.Null);
            Assert.That(job.StartedAt, Is.GreaterThanOrEqualTo(job.CreatedAt));
            Assert.That(job.FinishedAt, Is.GreaterThanOrEqualTo(job.StartedAt!.Value));
            Assert.That(job.Timings!.TotalMs, Is.GreaterThan(0));
        });
    }

    [Test]
    public async Task ShouldSucceed_WhenChatMessagesAreSubmitted()
    {
        var accepted = await Api.SubmitAsync(new
        {
            messages = new[]
            {
                new { role = "system", content = "You answer briefly." },
                new { role = "user", content = "What is a queue?" },
            },
            max_tokens = 12,
        });

        var job = await Api.WaitForFinalAsync(accepted.Id);

        Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded), job.Error);
        Assert.That(job.Usage!.CompletionTokens, Is.EqualTo(12));
        // The transcript ("System: ...\nUser: ...\nAssistant:") is longer than the two contents alone.
        Assert.That(job.Usage.PromptTokens, Is.GreaterThan(8));
    }

    [Test]
    public async Task ShouldGiveSameOutput_WhenSameSeedAndParametersAreUsedTwice()
    {
        var request = new { prompt = "The model said", max_tokens = 32, temperature = 0.9, top_p = 0.95, seed = 7 };
        var first = await Api.SubmitAsync(request);
        var second = await Api.SubmitAsync(request);
        var other = await Api.SubmitAsync(new { prompt = "The model said", max_tokens = 32, temperature = 0.9, top_p = 0.95, seed = 8 });

        var a = await Api.WaitForFinalAsync(first.Id);
        var b = await Api.WaitForFinalAsync(second.Id);
        var c = await Api.WaitForFinalAsync(other.Id);

        Assert.That(a.Status, Is.EqualTo(JobStatuses.Succeeded), a.Error);
        Assert.That(b.OutputText, Is.EqualTo(a.OutputText));
        Assert.That(c.OutputText, Is.Not.EqualTo(a.OutputText), "a different seed should sample differently");
    }

    [TestCase(1)]
    [TestCase(57)]
    public async Task ShouldGenerateExactlyMaxTokens_WhenNoEosComes(int maxTokens)
    {
        var accepted = await Api.SubmitAsync(new { prompt = "Count the tokens", max_tokens = maxTokens, temperature = 0 });

        var job = await Api.WaitForFinalAsync(accepted.Id);

        Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded), job.Error);
        Assert.That(job.Usage!.CompletionTokens, Is.EqualTo(maxTokens));
        Assert.That(job.FinishReason, Is.EqualTo("length"));
    }

    [Test]
    public async Task ShouldEndOutputBeforeStopString_WhenStopStringAppears()
    {
        var free = await Api.WaitForFinalAsync((await Api.SubmitAsync(new { prompt = "Stop here", max_tokens = 48, temperature = 0 })).Id);
        var text = free.OutputText!;
        Assume.That(text.Length, Is.GreaterThan(20));
        var stop = text.Substring(text.Length / 2, 3);
        var expected = text[..text.IndexOf(stop, StringComparison.Ordinal)];

        var stopped = await Api.WaitForFinalAsync(
            (await Api.SubmitAsync(new { prompt = "Stop here", max_tokens = 48, temperature = 0, stop = new[] { stop } })).Id);

        Assert.That(stopped.Status, Is.EqualTo(JobStatuses.Succeeded), stopped.Error);
        Assert.That(stopped.OutputText, Is.EqualTo(expected));
        Assert.That(stopped.FinishReason, Is.EqualTo("stop"));
        Assert.That(stopped.Usage!.CompletionTokens, Is.LessThan(48));
    }

    [Test]
    public async Task ShouldRunJobsInSharedDecodeSteps_When32JobsAreSubmittedAtOnce()
    {
        var before = (_worker.Scheduler.Counters.DecodeSteps, _worker.Scheduler.Counters.TokensGenerated);
        // The first to arrive wait in the engine until every slot is taken, so however fast the machine runs a job,
        // the steps are shared from the start; then the rest join as slots free up.
        var hold = _pacer.HoldWhen("asks a question");
        var accepted = await Task.WhenAll(Enumerable.Range(0, 32).Select(i =>
            Api.SubmitAsync(new { prompt = $"Job number {i} asks a question", max_tokens = 40, seed = (uint)i })));
        await _pacer.WaitForStepAsync(EnginePacer.Containing("asks a question"), count: 8);
        hold.Release();

        var jobs = await Task.WhenAll(accepted.Select(a => Api.WaitForFinalAsync(a.Id, TimeSpan.FromMinutes(3))));

        Assert.That(jobs.Select(j => j.Status), Is.All.EqualTo(JobStatuses.Succeeded));
        Assert.That(jobs.Select(j => j.Usage!.CompletionTokens), Is.All.EqualTo(40));
        var counters = _worker.Scheduler.Counters;
        var steps = counters.DecodeSteps - before.DecodeSteps;
        var tokens = counters.TokensGenerated - before.TokensGenerated;
        TestContext.Out.WriteLine($"{steps} decode steps for {tokens} tokens, peak {counters.PeakActiveSequences} sequences per step");
        Assert.That(counters.PeakActiveSequences, Is.GreaterThan(1), "sequences never shared a decode step");
        Assert.That(tokens, Is.GreaterThanOrEqualTo(32 * 40));
        // One sequence at a time would need at least one step per token; batching needs far fewer.
        Assert.That(steps, Is.LessThan(tokens / 2), $"{steps} decode steps for {tokens} tokens");
    }

    [Test]
    public async Task ShouldTreatSpecialTokenTextAsText_WhenPromptContainsEndOfSequenceMarkup()
    {
        var job = await Api.WaitForFinalAsync((await Api.SubmitAsync(new { prompt = "</s></s><s>", max_tokens = 8 })).Id);

        Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded), job.Error);
        // As control tokens this would be BOS + 3 tokens; as text each marker takes several tokens.
        Assert.That(job.Usage!.PromptTokens, Is.GreaterThan(4));
        Assert.That(job.Usage.CompletionTokens, Is.EqualTo(8));
    }

    [Test]
    public async Task ShouldReturnTheSameJob_WhenIdempotencyKeyIsRepeated()
    {
        var key = Guid.NewGuid().ToString();
        var body = new { prompt = "Only once", max_tokens = 4 };

        var first = await SubmitWithKeyAsync(key, body);
        var again = await SubmitWithKeyAsync(key, body);

        Assert.That((int)first.StatusCode, Is.EqualTo(202));
        Assert.That((int)again.StatusCode, Is.EqualTo(202));
        Assert.That(again.Headers.Location, Is.EqualTo(first.Headers.Location));
        Assert.That(again.Headers.Contains("Idempotent-Replayed"), Is.True);
        await Api.WaitForFinalAsync(Guid.Parse(first.Headers.Location!.ToString().Split('/')[^1]));
    }

    [Test]
    public async Task ShouldRejectWithProblemDetails_WhenIdempotencyKeyIsReusedForADifferentRequest()
    {
        var key = Guid.NewGuid().ToString();
        using var first = await SubmitWithKeyAsync(key, new { prompt = "First", max_tokens = 4 });
        await Api.WaitForFinalAsync(Guid.Parse(first.Headers.Location!.ToString().Split('/')[^1]));

        using var conflict = await SubmitWithKeyAsync(key, new { prompt = "Second", max_tokens = 4 });
        var problem = await conflict.Content.ReadAsStringAsync();

        Assert.That((int)conflict.StatusCode, Is.EqualTo(422));
        Assert.That(problem, Does.Contain("Idempotency-Key"));
    }

    [Test]
    public async Task ShouldFailWithReason_WhenTokenizedPromptPlusMaxTokensExceedsWorkerContext()
    {
        // 2500 characters pass the Producer's limit (8 characters per token of its 1024-token context), but each
        // 'é' is two byte tokens in the generated vocabulary: 5000 tokens do not fit the worker's 4096.
        var prompt = new string('é', 2500);
        var job = await Api.WaitForFinalAsync((await Api.SubmitAsync(new { prompt, max_tokens = 100 })).Id);

        Assert.That(job.Status, Is.EqualTo(JobStatuses.Failed));
        Assert.That(job.Error, Does.Contain("does not fit the worker's context of 4096 tokens"));
        Assert.That(job.Usage, Is.Null);
    }

    [Test]
    public async Task ShouldAnswerWithinTheWait_WhenLongPolling()
    {
        var accepted = await Api.SubmitAsync(new { prompt = "Long poll", max_tokens = 16 });

        var job = await Api.GetJobAsync(accepted.Id, waitSeconds: 30);

        Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded));
    }

    private async Task<HttpResponseMessage> SubmitWithKeyAsync(string key, object body)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/jobs")
        {
            Content = System.Net.Http.Json.JsonContent.Create(body, options: JobsClient.Json),
        };
        request.Headers.Add("Idempotency-Key", key);
        return await Api.SendAsync(request);
    }
}
