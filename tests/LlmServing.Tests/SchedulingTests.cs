using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// Continuous batching that holds up: cancellation, deadlines, time limits, the KV budget, decode failures and a
/// graceful stop, all on real RabbitMQ, PostgreSQL and llama.cpp.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class SchedulingTests
{
    private static readonly Dictionary<string, string?> LongContext = new() { ["Producer:ContextSize"] = "4096" };
    private readonly List<string> _queues = [];

    [OneTimeTearDown]
    public async Task DeleteQueuesAsync() => await Broker.DeleteAsync([.. _queues]);

    private string Queue(string name)
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-{name}";
        _queues.Add(queue);
        return queue;
    }

    [Test]
    public async Task ShouldNeverStartTheJob_WhenCancelledWhileQueued()
    {
        var queue = Queue("cancel-queued");
        await using var producer = await ProducerInstance.StartAsync(queue);
        await producer.QueueDeclared;
        var accepted = await producer.Client.SubmitAsync(new { prompt = "Cancel me early", max_tokens = 8 });

        var cancelled = await producer.Client.CancelAsync(accepted.Id);
        Assert.That(cancelled.Status, Is.EqualTo(JobStatuses.Cancelled));

        await using var worker = await WorkerInstance.StartAsync(queue);
        await Eventually.WaitUntilAsync(() => worker.Activity.Handled >= 1); // it received the message and let it go
        var job = await producer.Client.GetJobAsync(accepted.Id);

        Assert.That(job.Status, Is.EqualTo(JobStatuses.Cancelled));
        Assert.That(job.StartedAt, Is.Null);
        Assert.That(job.Attempts, Is.Zero);
        Assert.That(worker.Scheduler.Counters.TokensGenerated, Is.Zero);
    }

    [Test]
    public async Task ShouldEndCancelledWithTheTextSoFar_WhenCancelledWhileRunning()
    {
        var queue = Queue("cancel-running");
        await using var producer = await ProducerInstance.StartAsync(queue, LongContext);
        var pacer = new EnginePacer();
        await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Worker:CancelPollInterval"] = "00:00:00.100" }, pacer.Register);
        // Held in the engine after 10 tokens: still running, whatever the machine's speed, when the cancel arrives.
        using var hold = pacer.HoldWhen("A very long story", afterTokens: 10);
        var accepted = await producer.Client.SubmitAsync(new { prompt = "A very long story", max_tokens = 4000, ignore_eos = true });
        await hold.WaitReachedAsync();

        var requested = await producer.Client.CancelAsync(accepted.Id);
        var job = await producer.Client.WaitForFinalAsync(accepted.Id, TimeSpan.FromSeconds(20));

        Assert.That(requested.CancelRequestedAt, Is.Not.Null);
        Assert.That(job.Status, Is.EqualTo(JobStatuses.Cancelled));
        Assert.That(job.FinishReason, Is.EqualTo("cancelled"));
        Assert.That(job.Usage!.CompletionTokens, Is.InRange(10, 3999));
        Assert.That(job.OutputText, Is.Not.Empty);
        Assert.That(worker.Scheduler.Counters.ActiveSequences, Is.Zero, "the slot is free again");

        using var again = await producer.Client.PostAsync($"/v1/jobs/{accepted.Id}/cancel", null);
        Assert.That((int)again.StatusCode, Is.EqualTo(409), "an ended job cannot be cancelled");
    }

    [Test]
    public async Task ShouldKeepWithinTheKvBudget_WhenManyLongJobsArriveAtOnce()
    {
        var queue = Queue("kv-budget");
        await using var producer = await ProducerInstance.StartAsync(queue);
        // 1024 cells: three jobs of ~8 prompt + 300 new tokens fit together, a fourth does not.
        var pacer = new EnginePacer();
        await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Inference:ContextSize"] = "1024" }, pacer.Register);
        // The first jobs wait in the engine until three run together (what the budget allows), then all run free.
        var hold = pacer.HoldWhen("Long job");
        var accepted = await Task.WhenAll(Enumerable.Range(0, 12).Select(i =>
            producer.Client.SubmitAsync(new { prompt = $"Long job {i}", max_tokens = 300, ignore_eos = true })));
        await pacer.WaitForStepAsync(EnginePacer.Containing("Long job"), count: 3);
        hold.Release();

        var jobs = await Task.WhenAll(accepted.Select(a => producer.Client.WaitForFinalAsync(a.Id, TimeSpan.FromMinutes(3))));

        var counters = worker.Scheduler.Counters;
        Assert.That(jobs.Select(j => j.Status), Is.All.EqualTo(JobStatuses.Succeeded));
        Assert.That(jobs.Select(j => j.Usage!.CompletionTokens), Is.All.EqualTo(300));
        Assert.That(counters.PeakReservedTokens, Is.LessThanOrEqualTo(1024));
        Assert.That(counters.PeakActiveSequences, Is.EqualTo(3), "three fit the budget together, a fourth never joined them");
        Assert.That(counters.DecodeFailures, Is.Zero);
    }

    [Test]
    public async Task ShouldCompleteEveryJobExactlyOnce_WhenADecodeFailsAndTheExecutorIsRebuilt()
    {
        var queue = Queue("decode-failure");
        var faults = new DecodeFaults();
        await using var producer = await ProducerInstance.StartAsync(queue);
        var pacer = new EnginePacer();
        await using var worker = await WorkerInstance.StartAsync(queue, services: s =>
        {
            EngineFaults.Decode(faults)(s);
            pacer.Register(s);
        });
        var request = (int i) => new { prompt = $"Rebuild {i}", max_tokens = 200, temperature = 0 };
        // Held until all six are in the engine, then failed once all six are generating: mid-generation, all at once.
        var hold = pacer.HoldWhen("Rebuild");
        var accepted = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => producer.Client.SubmitAsync(request(i))));
        await pacer.WaitForStepAsync(EnginePacer.Containing("Rebuild"), count: 6);
        hold.Release();
        await pacer.WaitForStepAsync(steps => steps.Count(q => q.Generated >= 8) == 6);

        faults.FailNext();
        var jobs = await Task.WhenAll(accepted.Select(a => producer.Client.WaitForFinalAsync(a.Id)));
        // The same greedy requests again, undisturbed: the rebuilt runs must have produced exactly these.
        var reruns = await Task.WhenAll(Enumerable.Range(0, 6).Select(async i =>
            await producer.Client.WaitForFinalAsync((await producer.Client.SubmitAsync(request(i))).Id)));

        Assert.That(worker.Scheduler.Counters.DecodeFailures, Is.EqualTo(1));
        Assert.That(jobs.Select(j => j.Status), Is.All.EqualTo(JobStatuses.Succeeded));
        Assert.That(jobs.Select(j => j.Usage!.CompletionTokens), Is.All.EqualTo(200));
        Assert.That(jobs.Select(j => j.Attempts), Is.All.EqualTo(1));
        Assert.That(jobs.Select(j => j.OutputText), Is.EqualTo(reruns.Select(j => j.OutputText)));
    }

    [Test]
    public async Task ShouldReturnUnfinishedJobsToTheQueue_WhenTheWorkerIsStoppedMidGeneration()
    {
        var queue = Queue("graceful-stop");
        await using var producer = await ProducerInstance.StartAsync(queue, LongContext);
        var pacer = new EnginePacer();
        var first = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Worker:DrainTimeout"] = "00:00:01" }, pacer.Register);
        // At 5 ms a step the long job needs over 17 s on the first worker: it cannot finish within the 1 s drain.
        using var slow = pacer.Slow("Too long to finish", TimeSpan.FromMilliseconds(5));
        var longJob = await producer.Client.SubmitAsync(new { prompt = "Too long to finish", max_tokens = 3500, ignore_eos = true });
        var shortJob = await producer.Client.SubmitAsync(new { prompt = "Short enough", max_tokens = 16 });
        await producer.Client.WaitForStatusAsync(longJob.Id, JobStatuses.Running);
        await Eventually.WaitUntilAsync(() => Task.FromResult(first.Scheduler.Counters.TokensGenerated > 20));

        await first.DisposeAsync(); // what SIGTERM does: stop taking messages, drain 1 s, return the rest

        var afterStop = await producer.Client.GetJobAsync(longJob.Id);
        Assert.That(afterStop.Status, Is.EqualTo(JobStatuses.Running), "not failed, not finished: handed back");
        Assert.That(await Broker.MessageCountAsync(queue), Is.EqualTo(1), "the message is back in the queue");
        Assert.That(await Broker.ErrorCountAsync(queue), Is.Zero);

        await using var second = await WorkerInstance.StartAsync(queue);
        var done = await producer.Client.WaitForFinalAsync(longJob.Id, TimeSpan.FromMinutes(2));
        var shortDone = await producer.Client.GetJobAsync(shortJob.Id);

        Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded), done.Error);
        Assert.That(done.Usage!.CompletionTokens, Is.EqualTo(3500));
        Assert.That(done.Attempts, Is.EqualTo(2));
        Assert.That(shortDone.Status, Is.EqualTo(JobStatuses.Succeeded));
        Assert.That(shortDone.Attempts, Is.EqualTo(1), "finished within the drain on the first worker");
    }

    [TestCase(false, TestName = "ShouldExpireTheJob_WhenItsDeadlinePassesInTheQueue_AtTheWorker")]
    [TestCase(true, TestName = "ShouldExpireTheJob_WhenItsDeadlinePassesInTheQueue_InTheSweep")]
    public async Task ShouldExpireTheJob_WhenItsDeadlinePassesInTheQueue(bool sweep)
    {
        var queue = Queue(sweep ? "expire-sweep" : "expire-worker");
        await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
        {
            ["Producer:SweepInterval"] = sweep ? "00:00:00.200" : "01:00:00",
        });
        await producer.QueueDeclared;
        var accepted = await producer.Client.SubmitAsync(new { prompt = "Too late", max_tokens = 8, queue_timeout_seconds = 1 });
        await Eventually.WaitUntilAsync(() => DateTimeOffset.UtcNow > accepted.CreatedAt.AddSeconds(1.5)); // its deadline has passed

        await using var worker = await WorkerInstance.StartAsync(queue);
        await Eventually.WaitUntilAsync(() => worker.Activity.Handled >= 1);
        var job = await producer.Client.WaitForStatusAsync(accepted.Id, JobStatuses.Expired, TimeSpan.FromSeconds(10));

        Assert.That(job.Status, Is.EqualTo(JobStatuses.Expired));
        Assert.That(job.StartedAt, Is.Null);
        Assert.That(job.Attempts, Is.Zero);
        Assert.That(worker.Scheduler.Counters.TokensGenerated, Is.Zero);
    }

    [Test]
    public async Task ShouldKeepTheTextSoFar_WhenTheGenerationTimeLimitIsReached()
    {
        var queue = Queue("time-limit");
        await using var producer = await ProducerInstance.StartAsync(queue, LongContext);
        var pacer = new EnginePacer();
        await using var worker = await WorkerInstance.StartAsync(queue, services: pacer.Register);
        // At 5 ms a step its 4000 tokens need 20 s: the 1 s limit ends it, whatever the machine's speed.
        using var slow = pacer.Slow("Endless", TimeSpan.FromMilliseconds(5));

        var job = await producer.Client.WaitForFinalAsync(
            (await producer.Client.SubmitAsync(new { prompt = "Endless", max_tokens = 4000, ignore_eos = true, max_generation_seconds = 1 })).Id);

        Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded));
        Assert.That(job.FinishReason, Is.EqualTo("time_limit"));
        Assert.That(job.Usage!.CompletionTokens, Is.InRange(1, 3999));
        Assert.That(job.Timings!.RunMs, Is.GreaterThanOrEqualTo(900), "not cut before its limit");
    }
}
