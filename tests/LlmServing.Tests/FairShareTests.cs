using System.Net.Http.Json;
using System.Text.Json.Nodes;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// Fair share in the batch lane (ADR 0007): a small batch of one tenant, submitted after another tenant's big one,
/// finishes in about the time it takes alone, not after the big backlog. Real RabbitMQ, PostgreSQL and llama.cpp.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class FairShareTests
{
    [Test]
    public async Task ShouldFinishASmallBatchInAboutItsTimeAlone_WhenAnotherTenantsBigBatchIsAhead()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-fair";
        const string adminKey = "admin-for-fair-share";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:AdminKey"] = adminKey,
                ["Producer:BatchWindowPerTenant"] = "8",
                ["Producer:FinalizeInterval"] = "00:00:00.100",
            });
            await using var worker = await WorkerInstance.StartAsync(queue, new Dictionary<string, string?> { ["Inference:Slots"] = "4" });
            using var admin = TenantClients.WithKey(producer.Client.BaseAddress!, adminKey);
            using var big = await admin.TenantAsync($"big-{TestServices.RunId}");
            using var small = await admin.TenantAsync($"small-{TestServices.RunId}");
            var smallFile = string.Join("\n", Enumerable.Range(0, 10).Select(i => BatchApi.ChatLine($"s{i}", $"small {i}")));

            async Task<string> RunSmallAsync()
            {
                var batch = await small.CreateBatchAsync(await small.UploadAsync(smallFile));
                var done = await small.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromMinutes(2), "completed");
                Assert.That(done.Int("request_counts.completed"), Is.EqualTo(10));
                return batch.Str("id")!;
            }

            await RunSmallAsync(); // warm-up: the first batch pays for start-up

            var bigFile = string.Join("\n", Enumerable.Range(0, 3000).Select(i => BatchApi.ChatLine($"b{i}", $"big {i}")));
            var bigBatch = await big.CreateBatchAsync(await big.UploadAsync(bigFile));
            var bigId = bigBatch.Str("id")!;
            await Eventually.WaitUntilAsync(async () => (await big.GetBatchAsync(bigId)).Int("request_counts.completed") >= 20, timeoutSeconds: 60);
            var sharedId = await RunSmallAsync();
            var bigProgress = (await big.GetBatchAsync(bigId)).Int("request_counts.completed");
            // Counted in lines, not seconds: the big batch's lines that ended between the small batch's lines being
            // accepted and its last line ending. Beside the big batch, the small one shares the slots with a few of
            // them; behind it, it would start only after the big batch's thousands.
            await using var db = await TestDatabase.OpenAsync();
            var between = await db.ScalarAsync(
                $"WITH s AS (SELECT min(created_at) AS a, max(finished_at) AS b FROM jobs WHERE batch_id = '{sharedId}') " +
                $"SELECT count(*) FROM jobs, s WHERE batch_id = '{bigId}' AND finished_at BETWEEN s.a AND s.b");
            TestContext.Out.WriteLine($"big batch lines that ended while the small batch ran: {between}; big batch {bigProgress}/3000 done then");

            Assert.That(bigProgress, Is.LessThan(3000), "the big batch was still running: the small one did not wait for it");
            Assert.That(between, Is.LessThan(200), "the small batch's lines ran beside the big batch's, not after them");
            using var cancel = await big.PostAsync($"/v1/batches/{bigId}/cancel", null);
        }
        finally
        {
            await Broker.DeleteAsync(queue, queue + "-batch");
        }
    }
}
