using System.Net.Http.Json;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>Per-tenant limits: a submission rate and a cap on queued jobs, both answered with 429 + Retry-After.</summary>
[TestFixture]
[NonParallelizable]
public sealed class LimitsTests
{
    [Test]
    public async Task ShouldAnswer429WithRetryAfter_WhenATenantSubmitsFasterThanItsRate()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-ratelimit";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:RateLimitPerSecond"] = "1" });
            // All at once: sent one after another, six requests on a slow machine could span the bucket's refill.
            var responses = (await Task.WhenAll(Enumerable.Range(0, 6).Select(i =>
                producer.Client.PostAsJsonAsync("/v1/jobs", new { prompt = $"fast {i}", max_tokens = 1 }, JobsClient.Json)))).ToList();

            var limited = responses.Where(r => (int)r.StatusCode == 429).ToList();
            foreach (var ok in responses.Where(r => (int)r.StatusCode == 202))
            {
                // Nothing consumes this queue: cancel what was accepted, so it does not linger as queued.
                var id = System.Text.Json.Nodes.JsonNode.Parse(await ok.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
                using var cancel = await producer.Client.PostAsync($"/v1/jobs/{id}/cancel", null);
            }

            Assert.That(responses.Count(r => (int)r.StatusCode == 202), Is.InRange(2, 3), "the bucket holds two seconds' worth");
            Assert.That(limited, Is.Not.Empty);
            Assert.That(limited[0].Headers.RetryAfter, Is.Not.Null);
            Assert.That(await limited[0].Content.ReadAsStringAsync(), Does.Contain("Rate limit exceeded"));
            responses.ForEach(r => r.Dispose());
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldAnswer429_WhenATenantHasTooManyQueuedJobs()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-queuecap";
        try
        {
            // A tenant of its own (API keys on), so that no other test's queued jobs count against the cap.
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:MaxQueuedJobsPerTenant"] = "3",
                ["Producer:AdminKey"] = "admin-for-limits",
            });
            using var admin = TenantClients.WithKey(producer.Client.BaseAddress!, "admin-for-limits");
            using var tenantClient = await admin.TenantAsync($"cap-{TestServices.RunId}");
            producer.Client.DefaultRequestHeaders.Authorization = tenantClient.DefaultRequestHeaders.Authorization;

            var accepted = 0;
            HttpResponseMessage? refused = null;
            for (var i = 0; i < 5 && refused is null; i++)
            {
                var response = await producer.Client.PostAsJsonAsync("/v1/jobs", new { prompt = $"queued {i}", max_tokens = 1 }, JobsClient.Json);
                if ((int)response.StatusCode == 202)
                {
                    accepted++;
                    response.Dispose();
                }
                else
                {
                    refused = response;
                }
            }

            Assert.That(accepted, Is.EqualTo(3));
            Assert.That((int)refused!.StatusCode, Is.EqualTo(429));
            Assert.That(refused.Headers.RetryAfter, Is.Not.Null);
            Assert.That(await refused.Content.ReadAsStringAsync(), Does.Contain("3 jobs waiting"));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldAnswer429WithTheLimit_WhenABatchWouldPassTheTenantsEnqueuedTokens()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-tokenquota";
        try
        {
            // No worker: enqueued work stays enqueued. A tenant of its own, with its limit set by the admin.
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Producer:AdminKey"] = "admin-for-token-quota" });
            using var admin = TenantClients.WithKey(producer.Client.BaseAddress!, "admin-for-token-quota");
            var tenant = $"quota-{TestServices.RunId}";
            using var tenantClient = await admin.TenantAsync(tenant);
            producer.Client.DefaultRequestHeaders.Authorization = tenantClient.DefaultRequestHeaders.Authorization;
            using (var set = await admin.PutAsJsonAsync($"/v1/admin/tenants/{tenant}/settings", new { max_enqueued_tokens = 1500 }))
            {
                Assert.That((int)set.StatusCode, Is.EqualTo(200));
            }

            // 10 lines of max_tokens 100 and a short prompt: 1,000 estimated tokens each batch once read.
            var file = string.Join("\n", Enumerable.Range(0, 10).Select(i => BatchApi.ChatLine($"q{i}", "hi", maxTokens: 100)));
            async Task<HttpResponseMessage> CreateAsync() => await producer.Client.PostAsJsonAsync("/v1/batches",
                new { input_file_id = await producer.Client.UploadAsync(file), endpoint = "/v1/chat/completions", completion_window = "24h" });

            using var first = await CreateAsync();
            var firstId = System.Text.Json.Nodes.JsonNode.Parse(await first.Content.ReadAsStringAsync())!.Str("id")!;
            await producer.Client.WaitForBatchAsync(firstId, TimeSpan.FromSeconds(30), "in_progress");
            using var second = await CreateAsync();
            var body = await second.Content.ReadAsStringAsync();
            var secondAccepted = (int)second.StatusCode == 200;
            if (secondAccepted)
            {
                await producer.Client.WaitForBatchAsync(System.Text.Json.Nodes.JsonNode.Parse(body)!.Str("id")!, TimeSpan.FromSeconds(30), "in_progress");
            }

            using var third = await CreateAsync();
            var problem = System.Text.Json.Nodes.JsonNode.Parse(await third.Content.ReadAsStringAsync())!;
            using (await producer.Client.PostAsync($"/v1/batches/{firstId}/cancel", null))
            {
            }

            await producer.Client.WaitForBatchAsync(firstId, TimeSpan.FromSeconds(30), "cancelled");
            using var afterCancel = await CreateAsync();

            Assert.That(secondAccepted, Is.True, "1,000 enqueued + this file's ~340: within 1,500");
            Assert.That((int)third.StatusCode, Is.EqualTo(429));
            Assert.That(problem["limit"]!.GetValue<long>(), Is.EqualTo(1500));
            Assert.That(problem["enqueued"]!.GetValue<long>(), Is.EqualTo(2000), "two batches of 10 lines x 100 tokens");
            Assert.That(problem["detail"]!.GetValue<string>(), Does.Contain("over the limit of 1500"));
            Assert.That((int)afterCancel.StatusCode, Is.EqualTo(200), "cancelled work no longer counts");
        }
        finally
        {
            await Broker.DeleteAsync(queue, queue + "-batch");
        }
    }
}
