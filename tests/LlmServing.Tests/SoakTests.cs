using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// Months in a minute: rounds of jobs, files and batches that the clean-up then deletes (a tenant with a one-second
/// retention, files and outputs expiring at once). After each round and a VACUUM, the tenant has no rows left and the
/// tables and the database stop growing: space is reused, nothing piles up.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class SoakTests
{
    private static readonly string[] Tables = ["jobs", "files", "file_chunks", "batches", "usage_daily", "webhook_deliveries"];

    [Test]
    public async Task ShouldKeepTablesFlat_WhenJobsFilesAndBatchesAreCreatedAndExpiredRepeatedly()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-soak";
        const string adminKey = "admin-for-the-soak-test";
        const int rounds = 6;
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, new Dictionary<string, string?>
            {
                ["Producer:AdminKey"] = adminKey,
                ["Producer:FinalizeInterval"] = "00:00:00.200",
                ["Retention:Interval"] = "00:00:00.300",
                ["Retention:BatchFiles"] = "00:00:01",
                ["Retention:OutputFiles"] = "00:00:01",
            });
            await using var worker = await WorkerInstance.StartAsync(queue);
            using var admin = TenantClients.WithKey(producer.Client.BaseAddress!, adminKey);
            var tenant = $"soak-{TestServices.RunId}";
            using var client = await admin.TenantAsync(tenant);
            using (await admin.PutAsJsonAsync($"/v1/admin/tenants/{tenant}/settings", new { job_retention_days = 1 }))
            {
            }

            await TestDatabase.ScalarAsync($"WITH u AS (UPDATE tenant_settings SET job_retention_seconds = 1 WHERE tenant_id = '{tenant}' RETURNING 1) SELECT count(*) FROM u");
            var sizes = new List<(long[] Tables, long Database)>();
            var report = new StringBuilder($"round | {string.Join(" | ", Tables)} | database (bytes, after VACUUM)\n");
            for (var round = 1; round <= rounds; round++)
            {
                var jobs = await Task.WhenAll(Enumerable.Range(0, 30).Select(i => client.SubmitAsync(new { prompt = $"round {round} job {i} " + new string('x', 400), max_tokens = 6 })));
                var lines = string.Join("\n", Enumerable.Range(0, 40).Select(i => BatchApi.ChatLine($"r{round}-{i}", $"round {round} line {i} " + new string('y', 400))));
                await client.CreateBatchAsync(await client.UploadAsync(lines));
                await client.UploadAsync(lines); // a file no batch reads
                // Jobs, lines, files and the batch are gone once done and past retention (a second): then the round ended.
                Assert.That(jobs, Has.Length.EqualTo(30));
                await Eventually.WaitUntilAsync(async () => await TenantRowsAsync(tenant) == 0, timeoutSeconds: 60, pollMilliseconds: 250);
                await using (var db = await TestDatabase.OpenAsync())
                {
                    await db.ExecAsync($"VACUUM {string.Join(", ", Tables)}");
                }

                var size = await SizesAsync();
                sizes.Add(size);
                report.Append($"{round} | {string.Join(" | ", size.Tables)} | {size.Database}\n");
            }

            TestContext.Out.WriteLine(report.ToString());
            var usage = (await client.GetFromJsonAsync<JsonNode>("/v1/usage"))!["data"]!.AsArray();

            Assert.That(usage.Sum(d => d!["jobs"]!.GetValue<long>()), Is.EqualTo(rounds * 70), "every deleted job and line still counted");
            for (var t = 0; t < Tables.Length; t++)
            {
                Assert.That(sizes[^1].Tables[t], Is.LessThanOrEqualTo((sizes[1].Tables[t] * 1.25) + 65_536), $"{Tables[t]} grew after round 2");
            }

            Assert.That(sizes[^1].Database, Is.LessThanOrEqualTo((sizes[1].Database * 1.1) + 1_048_576), "the database grew after round 2");
        }
        finally
        {
            await Broker.DeleteAsync(queue, queue + "-batch");
        }
    }

    private static async Task<long> TenantRowsAsync(string tenant) =>
        await TestDatabase.ScalarAsync($"""
            SELECT (SELECT count(*) FROM jobs WHERE tenant_id = '{tenant}') + (SELECT count(*) FROM files WHERE tenant_id = '{tenant}')
                 + (SELECT count(*) FROM batches WHERE tenant_id = '{tenant}')
            """);

    private static async Task<(long[] Tables, long Database)> SizesAsync()
    {
        var tables = new long[Tables.Length];
        for (var i = 0; i < Tables.Length; i++)
        {
            tables[i] = await TestDatabase.ScalarAsync($"SELECT pg_total_relation_size('{Tables[i]}')");
        }

        return (tables, await TestDatabase.ScalarAsync("SELECT pg_database_size(current_database())"));
    }
}
