using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using MassTransit;
using StandardWebhooks;
using StandardWebhooks.Diagnostics;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>
/// Results reach the business side without polling: events on the bus for MassTransit services, signed webhooks for
/// everyone else. Real RabbitMQ, PostgreSQL and llama.cpp; webhooks go to a receiver on 127.0.0.1, which this test
/// configuration allows.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class ResultsOutTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-results";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;
    private IBusControl _business = null!;
    private readonly ConcurrentBag<(Guid MessageId, object Event)> _events = [];
    private WebhookReceiver _receiver = null!;
    private string _secret = "";

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Webhooks:AllowPrivateTargets"] = "true",
            ["Webhooks:FirstRetryDelay"] = "00:00:00.200",
            ["Webhooks:PollInterval"] = "00:00:00.100",
        });
        _worker = await WorkerInstance.StartAsync(_queue);

        // A business service that reacts to results: a MassTransit bus with one receive endpoint, a few lines.
        _business = Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(new Uri(TestServices.RabbitMq));
            cfg.ReceiveEndpoint($"billing-{TestServices.RunId}", e =>
            {
                e.Handler<JobCompleted>(context => Record(context.MessageId, context.Message));
                e.Handler<JobFailed>(context => Record(context.MessageId, context.Message));
                e.Handler<BatchCompleted>(context => Record(context.MessageId, context.Message));
            });
        });
        await _business.StartAsync();

        _receiver = WebhookReceiver.Start();
        using var issued = await _producer.Client.PostAsync("/v1/webhooks/secret", null);
        _secret = (await issued.Content.ReadFromJsonAsync<JsonNode>())!["secret"]!.GetValue<string>();
    }

    private Task Record(Guid? messageId, object message)
    {
        _events.Add((messageId ?? Guid.Empty, message));
        return Task.CompletedTask;
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _business.StopAsync();
        _receiver.Dispose();
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue, _queue + "-batch", $"billing-{TestServices.RunId}");
    }

    [Test]
    public async Task ShouldPublishJobCompletedOnceWithTheIdempotencyKey_WhenAJobSucceeds()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/jobs")
        {
            Content = JsonContent.Create(new { prompt = "Invoice 42", max_tokens = 5 }),
        };
        request.Headers.Add("Idempotency-Key", "invoice-42");
        using var response = await _producer.Client.SendAsync(request);
        var accepted = (await response.Content.ReadFromJsonAsync<JobResponse>(JobsClient.Json))!;
        var done = await _producer.Client.WaitForFinalAsync(accepted.Id);

        var completed = await Eventually.ValueAsync(() => _events.Select(e => e.Event).OfType<JobCompleted>().FirstOrDefault(e => e.JobId == accepted.Id));
        await Eventually.NeverWithinAsync(() => _events.Select(e => e.Event).OfType<JobCompleted>().Count(e => e.JobId == accepted.Id) > 1,
            TimeSpan.FromSeconds(1.5), "the event arrived twice");

        Assert.That(completed.IdempotencyKey, Is.EqualTo("invoice-42"));
        Assert.That(completed.Status, Is.EqualTo(JobStatuses.Succeeded));
        Assert.That(completed.OutputText, Is.EqualTo(done.OutputText));
        Assert.That(completed.Usage!.CompletionTokens, Is.EqualTo(done.Usage!.CompletionTokens));
        Assert.That(_events.Count(e => e.Event is JobCompleted c && c.JobId == accepted.Id), Is.EqualTo(1));
        Assert.That(_events.Single(e => e.Event is JobCompleted c && c.JobId == accepted.Id).MessageId, Is.EqualTo(ResultEventIds.ForJob(accepted.Id)),
            "a stable message id, so that a consumer can deduplicate a redelivery");
    }

    [Test]
    public async Task ShouldStillPublishTheEvent_WhenTheProcessThatWroteTheFinalStateDiedBeforePublishing()
    {
        // The row as a worker leaves it when it dies right after writing the result: final, its event still owed.
        var id = Guid.CreateVersion7();
        await using (var db = await TestDatabase.OpenAsync())
        {
            await db.ExecAsync($"""
                INSERT INTO jobs (id, tenant_id, status, request, created_at, finished_at, attempts, output_text, finish_reason, prompt_tokens, completion_tokens)
                VALUES ('{id}', 'default', 'failed', '{"{}"}', now(), now(), 1, NULL, NULL, 3, 0)
                """);
            await db.ExecAsync($"UPDATE jobs SET error = 'the worker ran out of memory' WHERE id = '{id}'");
        }

        var failed = await Eventually.ValueAsync(() => _events.Select(e => e.Event).OfType<JobFailed>().FirstOrDefault(e => e.JobId == id));

        // Published first, then marked sent in the same transaction's commit: the mark follows within moments.
        await Eventually.WaitUntilAsync(async () =>
            await TestDatabase.ScalarAsync($"SELECT count(*) FROM jobs WHERE id = '{id}' AND event_sent_at IS NOT NULL") == 1, timeoutSeconds: 10);

        Assert.That(failed.Status, Is.EqualTo(JobStatuses.Failed));
        Assert.That(failed.Error, Is.EqualTo("the worker ran out of memory"));
    }

    [Test]
    public async Task ShouldDeliverToAHealthyTarget_WhileAnotherTargetNeverAnswers()
    {
        // A target on 127.0.0.1 that accepts connections and never answers: each attempt to it waits for the 10 s timeout.
        using var silent = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        silent.Start();
        var held = new ConcurrentBag<System.Net.Sockets.TcpClient>();
        using var stop = new CancellationTokenSource();
        _ = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                held.Add(await silent.AcceptTcpClientAsync(stop.Token));
            }
        });
        var silentUrl = $"http://127.0.0.1:{((System.Net.IPEndPoint)silent.LocalEndpoint).Port}/never";
        await using var db = await TestDatabase.OpenAsync();
        try
        {
            // 20 deliveries due to the silent target, then one to the healthy receiver (due last).
            await db.ExecAsync($$"""
                INSERT INTO webhook_deliveries (id, tenant_id, event_type, subject_id, url, payload, status, attempts, next_attempt_at, created_at)
                SELECT gen_random_uuid(), 'default', 'job.completed', gen_random_uuid()::text, '{{silentUrl}}', '{}', 'pending', 0, now() - interval '1 minute', now()
                FROM generate_series(1, 20)
                """);
            var accepted = await _producer.Client.SubmitAsync(new { prompt = "Beside a silent target", max_tokens = 3, webhook_url = _receiver.Url("healthy") });

            await Eventually.WaitUntilAsync(() => _receiver.Received.Any(r => r.Path == "/healthy" && r.Body.Contains(accepted.Id.ToString())), 60);

            // Delivered while every attempt to the silent target is still waiting: in rounds of 16 it would have waited
            // for a round of them to time out (their attempts recorded) first.
            var attempted = await db.ScalarAsync($"SELECT count(*) FROM webhook_deliveries WHERE url = '{silentUrl}' AND attempts > 0");
            Assert.That(attempted, Is.Zero, "the healthy delivery waited for the silent target's attempts");
        }
        finally
        {
            await db.ExecAsync($"UPDATE webhook_deliveries SET status = 'failed' WHERE url = '{silentUrl}'");
            await stop.CancelAsync();
            silent.Stop();
            foreach (var client in held)
            {
                client.Dispose();
            }
        }
    }

    [Test]
    public async Task ShouldDeliverASignedWebhookWithTheResult_WhenAJobNamesATarget()
    {
        var accepted = await _producer.Client.SubmitAsync(new { prompt = "Ticket 7", max_tokens = 4, webhook_url = _receiver.Url("job") });

        var delivery = await Eventually.ValueAsync(() => _receiver.Received.FirstOrDefault(r => r.Path == "/job" && r.Body.Contains(accepted.Id.ToString())));
        var body = JsonNode.Parse(delivery.Body)!;

        Assert.DoesNotThrow(() => new StandardWebhook(_secret).Verify(delivery.Body, delivery.Headers), "the signature verifies with the tenant's secret");
        Assert.That(delivery.Headers["webhook-id"].ToString(), Does.StartWith("msg_"));
        Assert.That(body["type"]!.GetValue<string>(), Is.EqualTo("job.completed"));
        Assert.That(body["data"]!["id"]!.GetValue<string>(), Is.EqualTo(accepted.Id.ToString()));
        Assert.That(body["data"]!["usage"]!["completion_tokens"]!.GetValue<int>(), Is.GreaterThan(0));
        Assert.Throws<WebhookVerificationException>(() => new StandardWebhook("whsec_" + Convert.ToBase64String(new byte[32])).Verify(delivery.Body, delivery.Headers),
            "another secret does not verify it");
    }

    [Test]
    public async Task ShouldRetryUntilTheTargetAnswers_AndShowTheAttempts()
    {
        _receiver.FailNext("flaky", 2);
        var accepted = await _producer.Client.SubmitAsync(new { prompt = "Retry me", max_tokens = 3, webhook_url = _receiver.Url("flaky") });

        var deliveries = await Eventually.ValueAsync(async () =>
        {
            var list = await _producer.Client.GetFromJsonAsync<JsonNode>($"/v1/webhooks/deliveries?subject_id={accepted.Id}");
            var first = list!["data"]!.AsArray().FirstOrDefault();
            return first?["status"]?.GetValue<string>() == "delivered" ? first : null;
        }, TimeSpan.FromSeconds(30));
        var attempts = _receiver.Received.Where(r => r.Path == "/flaky" && r.Body.Contains(accepted.Id.ToString())).ToList();

        Assert.That(deliveries["attempts"]!.GetValue<int>(), Is.EqualTo(3));
        Assert.That(deliveries["last_status_code"]!.GetValue<int>(), Is.EqualTo(200));
        Assert.That(attempts, Has.Count.EqualTo(3));
        Assert.That(attempts.Select(a => a.Headers["webhook-id"].ToString()).Distinct().Count(), Is.EqualTo(1), "one message id for every attempt");
    }

    [Test]
    public async Task ShouldSendBatchCompletedToTheTenantDefault_AndNoWebhookPerLine()
    {
        using (var set = await _producer.Client.PutAsJsonAsync("/v1/webhooks", new { url = _receiver.Url("tenant") }))
        {
            Assert.That(set.StatusCode, Is.EqualTo(HttpStatusCode.OK), await set.Content.ReadAsStringAsync());
        }

        try
        {
            var file = await _producer.Client.UploadAsync(BatchApi.ChatLine("a", "hi") + "\n" + BatchApi.ChatLine("b", "there") + "\n");
            var batch = await _producer.Client.CreateBatchAsync(file);
            var id = batch.Str("id")!;

            var delivery = await Eventually.ValueAsync(() => _receiver.Received.FirstOrDefault(r => r.Path == "/tenant" && r.Body.Contains(id)), TimeSpan.FromSeconds(60));
            var body = JsonNode.Parse(delivery.Body)!;
            var busEvent = await Eventually.ValueAsync(() => _events.Select(e => e.Event).OfType<BatchCompleted>().FirstOrDefault(e => e.BatchId == id));
            var lineEvents = await Eventually.ValueAsync(() =>
            {
                var lines = _events.Select(e => e.Event).OfType<JobCompleted>().Where(e => e.BatchId == id).ToList();
                return lines.Count == 2 ? lines : null;
            });

            Assert.That(body["type"]!.GetValue<string>(), Is.EqualTo("batch.completed"));
            Assert.That(body["data"]!["request_counts"]!["total"]!.GetValue<int>(), Is.EqualTo(2));
            Assert.That(body["data"]!["request_counts"]!["completed"]!.GetValue<int>(), Is.EqualTo(2));
            Assert.That(busEvent.Status, Is.EqualTo("completed"));
            Assert.That(busEvent.Usage!.CompletionTokens, Is.GreaterThan(0));
            Assert.That(lineEvents.Select(e => e.CustomId), Is.EquivalentTo(new[] { "a", "b" }), "bus events carry each line's custom_id");
            Assert.That(_receiver.Received.Count(r => r.Path == "/tenant" && r.Body.Contains("\"job.")), Is.Zero, "lines send no webhooks of their own");
        }
        finally
        {
            using var cleared = await _producer.Client.PutAsJsonAsync("/v1/webhooks", new { url = (string?)null });
        }
    }

    [Test]
    public async Task ShouldRefuseATarget_WhenTheTenantHasNoSigningSecret()
    {
        await using var db = await TestDatabase.OpenAsync();
        await db.ExecAsync("UPDATE tenant_webhooks SET secret = NULL WHERE tenant_id = 'default'");
        try
        {
            using var response = await _producer.Client.PostAsJsonAsync("/v1/jobs", new { prompt = "x", webhook_url = _receiver.Url("job") });

            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.UnprocessableEntity));
            Assert.That(await response.Content.ReadAsStringAsync(), Does.Contain("POST /v1/webhooks/secret"));
        }
        finally
        {
            await db.ExecAsync($"UPDATE tenant_webhooks SET secret = '{_secret}' WHERE tenant_id = 'default'");
        }
    }
}
