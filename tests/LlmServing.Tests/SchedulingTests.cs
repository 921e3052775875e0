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
        await Eventually.WaitUntilAsync(async () => await Broker.MessageCountAsync(queue) == 0);
        await Task.Delay(500);
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
        await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Worker:CancelPollInterval"] = "00:00:00.100" });
        var accepted = await producer.Client.SubmitAsync(new { prompt = "A very long story", max_tokens = 4000, ignore_eos = true });
        await producer.Client.WaitForStatusAsync(accepted.Id, JobStatuses.Running);
        await Eventually.WaitUntilAsync(() => Task.FromResult(worker.Scheduler.Counters.TokensGenerated > 10));

        var requested = await producer.Client.CancelAsync(accepted.Id);
        var job = await producer.Client.WaitForFinalAsync(accepted.Id, TimeSpan.FromSeconds(20));

        Assert.That(requested.CancelRequestedAt, Is.Not.Null);
        Assert.That(job.Status, Is.EqualTo(JobStatuses.Cancelled));
        Assert.That(job.FinishReason, Is.EqualTo("cancelled"));
        Assert.That(job.Usage!.CompletionTokens, Is.InRange(1, 3999));
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
        await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Inference:ContextSize"] = "1024" });
        var accepted = await Task.WhenAll(Enumerable.Range(0, 12).Select(i =>
            producer.Client.SubmitAsync(new { prompt = $"Long job {i}", max_tokens = 300, ignore_eos = true })));

        var jobs = await Task.WhenAll(accepted.Select(a => producer.Client.WaitForFinalAsync(a.Id, TimeSpan.FromMinutes(3))));

        var counters = worker.Scheduler.Counters;
        Assert.That(jobs.Select(j => j.Status), Is.All.EqualTo(JobStatuses.Succeeded));
        Assert.That(jobs.Select(j => j.Usage!.CompletionTokens), Is.All.EqualTo(300));
        Assert.That(counters.PeakReservedTokens, Is.LessThanOrEqualTo(1024));
        Assert.That(counters.PeakActiveSequences, Is.InRange(2, 3));
        Assert.That(counters.DecodeFailures, Is.Zero);
    }

    [Test]
    public async Task ShouldCompleteEveryJobExactlyOnce_WhenADecodeFailsAndTheExecutorIsRebuilt()
    {
        var queue = Queue("decode-failure");
        var faults = new DecodeFaults();
        await using var producer = await ProducerInstance.StartAsync(queue);
        await using var worker = await WorkerInstance.StartAsync(queue, services: EngineFaults.Decode(faults));
        var request = (int i) => new { prompt = $"Rebuild {i}", max_tokens = 200, temperature = 0 };
        var accepted = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => producer.Client.SubmitAsync(request(i))));
        await Eventually.WaitUntilAsync(() => Task.FromResult(worker.Scheduler.Counters.TokensGenerated > 50));

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
        var first = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Worker:DrainTimeout"] = "00:00:01" });
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
        await Task.Delay(TimeSpan.FromSeconds(1.6));

        await using var worker = await WorkerInstance.StartAsync(queue);
        await Eventually.WaitUntilAsync(async () => await Broker.MessageCountAsync(queue) == 0);
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
        await using var worker = await WorkerInstance.StartAsync(queue);

        var job = await producer.Client.WaitForFinalAsync(
            (await producer.Client.SubmitAsync(new { prompt = "Endless", max_tokens = 4000, ignore_eos = true, max_generation_seconds = 1 })).Id);

        Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded));
        Assert.That(job.FinishReason, Is.EqualTo("time_limit"));
        Assert.That(job.Usage!.CompletionTokens, Is.InRange(1, 3999));
        Assert.That(job.Timings!.RunMs, Is.InRange(900, 5000));
    }
}
