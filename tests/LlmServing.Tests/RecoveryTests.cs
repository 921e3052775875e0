using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using Npgsql;

namespace LlmServing.Tests;

/// <summary>
/// Nothing accepted stays stuck: a batch whose ingestion failed once, was lost or whose Producer was killed resumes;
/// a job whose worker vanished or whose message was lost runs again; batch lines wait unclaimed for a slot; bad batch
/// lines (NUL, BOM, unsupported fields) fail alone. Real RabbitMQ, PostgreSQL and llama.cpp.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class RecoveryTests
{
    [Test]
    public async Task ShouldRetryIngestionOnItsOwnQueue_WhenItFailsOnce()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-retry";
        var customId = $"fail_once_{Guid.NewGuid():N}";
        await using var db = await TestDatabase.OpenAsync();
        await db.ExecAsync($"CREATE SEQUENCE {customId}");
        await db.ExecAsync("""
            CREATE OR REPLACE FUNCTION test_fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              -- Sequences ignore rollbacks: the first insert of such a line fails, every later one passes.
              IF NEW.custom_id LIKE 'fail\_once\_%' AND nextval(NEW.custom_id::regclass) = 1 THEN
                RAISE EXCEPTION 'injected ingestion failure';
              END IF;
              RETURN NEW;
            END $$;
            DROP TRIGGER IF EXISTS test_fail_once ON jobs;
            CREATE TRIGGER test_fail_once BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION test_fail_once();
            """);
        try
        {
            // The stall reaper is pushed out of the way: only Hangfire's own retry can finish this batch in time.
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:IngestionStallTimeout"] = "00:10:00",
                ["Producer:FinalizeInterval"] = "00:00:00.200",
            });
            await using var worker = await WorkerInstance.StartAsync(queue);
            var batch = await producer.Client.CreateBatchAsync(await producer.Client.UploadAsync(
                BatchApi.ChatLine(customId, "first", maxTokens: 2) + "\n" + BatchApi.ChatLine("second", "second", maxTokens: 2)));

            var done = await producer.Client.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromSeconds(60), "completed", "failed");

            Assert.That(done.Str("status"), Is.EqualTo("completed"));
            Assert.That(done.Int("request_counts.completed"), Is.EqualTo(2));
        }
        finally
        {
            await db.ExecAsync($"DROP TRIGGER IF EXISTS test_fail_once ON jobs; DROP SEQUENCE IF EXISTS {customId}");
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldResumeABatch_WhenItsIngestionJobWasNeverEnqueued()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-lostenqueue";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:IngestionStallTimeout"] = "00:00:02",
                ["Producer:FinalizeInterval"] = "00:00:00.200",
            });
            await using var worker = await WorkerInstance.StartAsync(queue);
            var fileId = await producer.Client.UploadAsync(string.Join("\n", Enumerable.Range(0, 5).Select(i => BatchApi.ChatLine($"l{i}", "hello", maxTokens: 2))));
            // As if the Producer died between committing the batch and enqueueing its ingestion (or the job was lost).
            var batchId = $"batch_{Guid.CreateVersion7():N}";
            await using (var db = await TestDatabase.OpenAsync())
            {
                await db.ExecAsync($"""
                    INSERT INTO batches (id, tenant_id, endpoint, input_file_id, completion_window, status, job_queue, ingested_lines,
                                         ingested_bytes, created_at, expires_at, published, ingestion_heartbeat_at)
                    VALUES ('{batchId}', 'default', '/v1/chat/completions', '{fileId}', '24h', 'validating', '{queue}-batch', 0, 0,
                            now(), now() + interval '24 hours', false, now() - interval '1 hour')
                    """);
            }

            var done = await producer.Client.WaitForBatchAsync(batchId, TimeSpan.FromSeconds(60), "completed", "failed");

            Assert.That(done.Int("request_counts.completed"), Is.EqualTo(5));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldExpireABatch_WhenItIsStillValidatingPastItsWindow()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-validating-expiry";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:FinalizeInterval"] = "00:00:00.200" });
            var fileId = await producer.Client.UploadAsync(BatchApi.ChatLine("never", "hello"));
            var batchId = $"batch_{Guid.CreateVersion7():N}";
            await using (var db = await TestDatabase.OpenAsync())
            {
                await db.ExecAsync($"""
                    INSERT INTO batches (id, tenant_id, endpoint, input_file_id, completion_window, status, job_queue, ingested_lines,
                                         ingested_bytes, created_at, expires_at, published, ingestion_heartbeat_at)
                    VALUES ('{batchId}', 'default', '/v1/chat/completions', '{fileId}', '24h', 'validating', '{queue}-batch', 0, 0,
                            now() - interval '25 hours', now() - interval '1 hour', false, now())
                    """);
            }

            var done = await producer.Client.WaitForBatchAsync(batchId, TimeSpan.FromSeconds(30), "expired", "completed", "failed");

            Assert.That(done.Str("status"), Is.EqualTo("expired"));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldFinishEveryLineOnce_WhenTheProducerIsKilledWhilePublishingABatch()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-kill-producer";
        const int lines = 3000;
        try
        {
            var port = AppProcess.FreePort();
            await using var doomed = AppProcess.Start(AppProcess.Dll("Producer", "LlmServing.Producer"), new Dictionary<string, string>
            {
                ["Producer__JobQueue"] = queue,
                ["Producer__BatchJobQueue"] = queue + "-batch",
                ["Producer__PublishConcurrency"] = "10", // slow enough to be killed half-way
                ["Producer__BatchWindowPerTenant"] = "5000", // the whole batch released at once, as before fair share
                ["Urls"] = $"http://127.0.0.1:{port}",
            });
            using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
            await AppProcess.WaitReadyAsync(client, timeoutSeconds: 60);

            var jsonl = string.Join("\n", Enumerable.Range(0, lines).Select(i => BatchApi.ChatLine($"k{i}", "hi", maxTokens: 1)));
            using var response = await client.PostAsync("/v1/batches", new StringContent(jsonl, Encoding.UTF8, "application/jsonl"));
            var batchId = JsonNode.Parse(await response.Content.ReadAsStringAsync())!.Str("id")!;
            await using var db = await TestDatabase.OpenAsync();
            await Eventually.WaitUntilAsync(async () => await PublishedLinesAsync(db, batchId) > 0, timeoutSeconds: 60, pollMilliseconds: 5);
            await doomed.KillAsync(); // SIGKILL mid-publish
            var publishedAtKill = await PublishedLinesAsync(db, batchId);
            Assert.That(publishedAtKill, Is.LessThan(lines), "the kill landed while lines were still unpublished");

            var restarted = Stopwatch.StartNew();
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:IngestionStallTimeout"] = "00:00:05",
                ["Producer:FinalizeInterval"] = "00:00:00.200",
                ["Producer:BatchWindowPerTenant"] = "5000",
            });
            await Eventually.WaitUntilAsync(async () => await PublishedLinesAsync(db, batchId) == lines, timeoutSeconds: 60, pollMilliseconds: 100);
            var allPublished = restarted.Elapsed;
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Inference:Slots"] = "16" });
            var done = await producer.Client.WaitForBatchAsync(batchId, TimeSpan.FromMinutes(4), "completed", "failed");
            TestContext.Out.WriteLine($"killed at {publishedAtKill}/{lines} lines published; all published {allPublished.TotalSeconds:F1} s after the new Producer started; completed {restarted.Elapsed.TotalSeconds:F1} s after");

            Assert.That(done.Int("request_counts.completed"), Is.EqualTo(lines));
            var output = await producer.Client.DownloadLinesAsync(done.Str("output_file_id"));
            Assert.That(output.Select(o => o.Str("custom_id")).Distinct().Count(), Is.EqualTo(lines), "each custom_id once");
            Assert.That(output, Has.Count.EqualTo(lines));
            Assert.That(allPublished, Is.LessThan(TimeSpan.FromMinutes(1)), "resumed without waiting for Hangfire's 30-minute invisibility timeout");
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldRunAJobAgain_WhenItIsRunningButItsLeaseLapsed()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-lease";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:JobLease"] = "00:00:02",
                ["Producer:ReaperInterval"] = "00:00:00.250",
            });
            await producer.QueueDeclared;
            var job = await producer.Client.SubmitAsync(new { prompt = "Orphaned", max_tokens = 3 });
            await Eventually.WaitUntilAsync(async () => await Broker.MessageCountAsync(queue) == 1);
            // As after a long PostgreSQL outage: a worker claimed it, then its message went to the error queue.
            await using (var db = await TestDatabase.OpenAsync())
            {
                await db.ExecAsync($"UPDATE jobs SET status = 'running', attempts = 1, worker_id = 'gone', started_at = now(), lease_expires_at = now() + interval '1 second' WHERE id = '{job.Id}'");
            }

            await Broker.PurgeAsync(queue);
            await using var worker = await WorkerInstance.StartAsync(queue);

            var done = await producer.Client.WaitForFinalAsync(job.Id, TimeSpan.FromSeconds(45));

            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded), done.Error);
            Assert.That(done.Attempts, Is.EqualTo(2));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldKeepTheLeaseOfALongJob_WhileItsWorkerRunsIt()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-longlease";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:ContextSize"] = "4096",
                // Short leases (renewed every quarter) so that the job outlives one; 3 s rather than 1 s, so that a busy
                // CI machine that delays renewals by a second or two does not read as a lost worker.
                ["Producer:JobLease"] = "00:00:03",
                ["Producer:ReaperInterval"] = "00:00:00.100",
            });
            var pacer = new EnginePacer();
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Worker:JobLease"] = "00:00:03" }, pacer.Register);
            // 500 steps of at least 10 ms: the job runs for 5 s or more, longer than its 3 s lease, on any machine.
            using var slow = pacer.Slow("A long one", TimeSpan.FromMilliseconds(10));
            var job = await producer.Client.SubmitAsync(new { prompt = "A long one", max_tokens = 500, ignore_eos = true });

            var done = await producer.Client.WaitForFinalAsync(job.Id, TimeSpan.FromMinutes(2));

            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded));
            Assert.That(done.Timings!.RunMs, Is.GreaterThan(4000), "ran for longer than its lease");
            Assert.That(done.Attempts, Is.EqualTo(1), "never requeued while its worker renewed the lease");
            Assert.That(worker.Scheduler.Counters.SequencesCompleted, Is.EqualTo(1));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldSendAQueuedJobAgain_WhenItsMessageWasLost()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-lostmessage";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:LostMessageAge"] = "00:00:01",
                ["Producer:ReaperInterval"] = "00:00:00.250",
            });
            await producer.QueueDeclared;
            var job = await producer.Client.SubmitAsync(new { prompt = "Lost and found", max_tokens = 3 });
            await Eventually.WaitUntilAsync(async () => await Broker.MessageCountAsync(queue) == 1);
            await Broker.PurgeAsync(queue); // dead-lettered or purged: the row still says queued
            await using var worker = await WorkerInstance.StartAsync(queue);

            var done = await producer.Client.WaitForFinalAsync(job.Id, TimeSpan.FromSeconds(45));

            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded), done.Error);
            Assert.That(done.Attempts, Is.EqualTo(1));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldLeaveBatchLinesUnclaimed_WhileAllSlotsAreBusy()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-claimlate";
        try
        {
            // The busy job is far longer than the test needs; it is cancelled once the lines have been looked at.
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:ContextSize"] = "16384" });
            // Lines waiting longer than a second go back to the end of the queue, again and again, still unclaimed.
            var pacer = new EnginePacer();
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Inference:Slots"] = "1",
                ["Inference:ContextSize"] = "16384",
                ["Worker:MaxSlotWait"] = "00:00:01",
            }, pacer.Register);
            // Held in the engine until it is cancelled: the only slot stays taken for as long as the test looks.
            using var hold = pacer.HoldWhen("Hold the only slot");
            var busy = await producer.Client.SubmitAsync(new { prompt = "Hold the only slot", max_tokens = 16000, ignore_eos = true });
            await hold.WaitReachedAsync();
            var handledBefore = worker.Activity.Handled;
            var batch = await producer.Client.CreateBatchAsync(await producer.Client.UploadAsync(
                string.Join("\n", Enumerable.Range(0, 3).Select(i => BatchApi.ChatLine($"w{i}", "wait", maxTokens: 2)))));
            var batchId = batch.Str("id")!;
            await using var db = await TestDatabase.OpenAsync();
            await Eventually.WaitUntilAsync(async () => await db.ScalarAsync($"SELECT count(*) FROM jobs WHERE batch_id = '{batchId}' AND queued_at IS NOT NULL") == 3);
            // The worker has prefetched the lines and sent each back at least once (each waited past MaxSlotWait).
            await Eventually.WaitUntilAsync(() => worker.Activity.Handled >= handledBefore + 3);

            var claimed = await db.ScalarAsync($"SELECT count(*) FROM jobs WHERE batch_id = '{batchId}' AND (status <> 'queued' OR attempts > 0)");
            Assert.That((await producer.Client.GetJobAsync(busy.Id)).Status, Is.EqualTo(JobStatuses.Running), "the slot is still taken");
            Assert.That(claimed, Is.Zero, "no line is running or has an attempt while it waits for a slot");

            await producer.Client.CancelAsync(busy.Id);
            var done = await producer.Client.WaitForBatchAsync(batchId, TimeSpan.FromSeconds(60), "completed", "failed");
            Assert.That(done.Int("request_counts.completed"), Is.EqualTo(3));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldFailOnlyTheBadLines_WhenLinesHoldANulABomOrAQueueTimeout()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-badlines";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:FinalizeInterval"] = "00:00:00.200" });
            await using var worker = await WorkerInstance.StartAsync(queue);
            var jsonl = "\uFEFF" + BatchApi.ChatLine("bom-first", "hello", maxTokens: 2) + "\n"
                        + """{"custom_id": "nul\u0000id", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}]}}""" + "\n"
                        + """{"custom_id": "nul-content", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x\u0000"}]}}""" + "\n"
                        + """{"custom_id": "timeout", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}], "queue_timeout_seconds": 5}}""" + "\n"
                        // A lone surrogate escape: System.Text.Json reads it, PostgreSQL could not store it (the batch stayed
                        // validating forever before).
                        + """{"custom_id": "surrogate", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x\ud800"}]}}""" + "\n"
                        + BatchApi.ChatLine("last", "hello", maxTokens: 2) + "\n";
            var batch = await producer.Client.CreateBatchAsync(await producer.Client.UploadAsync(jsonl));

            var done = await producer.Client.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromSeconds(60), "completed", "failed");

            Assert.That(done.Str("status"), Is.EqualTo("completed"), done.ToJsonString());
            Assert.That(done.Int("request_counts.completed"), Is.EqualTo(2));
            Assert.That(done.Int("request_counts.failed"), Is.EqualTo(4));
            var errors = await producer.Client.DownloadLinesAsync(done.Str("error_file_id"));
            Assert.That(errors.Select(e => e["error"]!.Str("message")), Is.EqualTo(new[]
            {
                "Line 2 contains a NUL character (\\u0000), which cannot be stored; remove it.",
                "Line 3 contains a NUL character (\\u0000), which cannot be stored; remove it.",
                "Line 4: 'queue_timeout_seconds' is not supported in batch lines; a batch line waits for its batch's completion_window.",
                "Line 5 contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not text; remove it.",
            }));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    private static async Task<long> PublishedLinesAsync(NpgsqlConnection db, string batchId) =>
        await db.ScalarAsync($"SELECT count(*) FROM jobs WHERE batch_id = '{batchId}' AND queued_at IS NOT NULL");
}
