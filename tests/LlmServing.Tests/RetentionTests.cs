using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>
/// Running for months: listing and deleting files and jobs, expiry, the recurring clean-up and usage that survives it.
/// Each test works in tenants of its own (API keys on), so that short retention never touches other tests' rows.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class RetentionTests
{
    private const string AdminKey = "admin-for-retention-tests";
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-retention";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;
    private HttpClient _admin = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?>
        {
            ["Producer:AdminKey"] = AdminKey,
            ["Retention:Interval"] = "00:00:00.300",
        });
        _worker = await WorkerInstance.StartAsync(_queue);
        _admin = TenantClients.WithKey(_producer.Client.BaseAddress!, AdminKey);
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        _admin.Dispose();
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue, _queue + "-batch");
    }

    private Task<HttpClient> TenantAsync(string name) => _admin.TenantAsync($"{name}-{TestServices.RunId}");

    [Test]
    public async Task ShouldDeleteFinalJobsPastTheTenantsRetention_AndKeepTheirUsage()
    {
        using var brief = await TenantAsync("brief");
        using var keeper = await TenantAsync("keeper");
        using (var set = await _admin.PutAsJsonAsync($"/v1/admin/tenants/brief-{TestServices.RunId}/settings", new { job_retention_days = 1 }))
        {
            Assert.That((await set.Content.ReadFromJsonAsync<JsonNode>())!["job_retention_days"]!.GetValue<int>(), Is.EqualTo(1));
        }

        var kept = await keeper.WaitForFinalAsync((await keeper.SubmitAsync(new { prompt = "keep me", max_tokens = 3 })).Id);
        var first = await brief.WaitForFinalAsync((await brief.SubmitAsync(new { prompt = "forget me", max_tokens = 3 })).Id);
        var second = await brief.WaitForFinalAsync((await brief.SubmitAsync(new { prompt = "and me", max_tokens = 4 })).Id);
        // A day is too long to wait: the override becomes one second, as if a day had passed.
        await TestDatabase.ScalarAsync($"WITH u AS (UPDATE tenant_settings SET job_retention_seconds = 1 WHERE tenant_id = 'brief-{TestServices.RunId}' RETURNING 1) SELECT count(*) FROM u");

        await Eventually.WaitUntilAsync(async () => (await brief.GetAsync($"/v1/jobs/{second.Id}")).StatusCode == HttpStatusCode.NotFound, timeoutSeconds: 20);
        var usage = (await brief.GetFromJsonAsync<JsonNode>("/v1/usage"))!["data"]!.AsArray();

        Assert.That((await brief.GetAsync($"/v1/jobs/{first.Id}")).StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
        Assert.That((await keeper.GetAsync($"/v1/jobs/{kept.Id}")).StatusCode, Is.EqualTo(HttpStatusCode.OK), "the default retention (30 days) keeps it");
        Assert.That(usage.Sum(d => d!["jobs"]!.GetValue<long>()), Is.EqualTo(2), "deleted jobs still count");
        Assert.That(usage.Sum(d => d!["completion_tokens"]!.GetValue<long>()),
            Is.EqualTo(first.Usage!.CompletionTokens + second.Usage!.CompletionTokens));
        Assert.That(usage.Sum(d => d!["prompt_tokens"]!.GetValue<long>()), Is.EqualTo(first.Usage.PromptTokens + second.Usage.PromptTokens));
    }

    [Test]
    public async Task ShouldListJobsByStatus_AndDeleteAFinalOneKeepingItsUsage()
    {
        using var tenant = await TenantAsync("lister");
        var done = await tenant.WaitForFinalAsync((await tenant.SubmitAsync(new { prompt = "list me", max_tokens = 3 })).Id);

        var listed = (await tenant.GetFromJsonAsync<JsonNode>("/v1/jobs?status=succeeded"))!["data"]!.AsArray();
        await Eventually.WaitUntilAsync(async () =>
        {
            using var response = await tenant.DeleteAsync($"/v1/jobs/{done.Id}");
            return response.StatusCode == HttpStatusCode.OK;
        }, timeoutSeconds: 10, pollMilliseconds: 500);
        var usage = (await tenant.GetFromJsonAsync<JsonNode>("/v1/usage"))!["data"]!.AsArray();

        Assert.That(listed.Select(j => j!["id"]!.GetValue<string>()), Is.EqualTo(new[] { done.Id.ToString() }), "its own tenant's jobs only");
        Assert.That((await tenant.GetAsync($"/v1/jobs/{done.Id}")).StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
        Assert.That((await tenant.DeleteAsync($"/v1/jobs/{done.Id}")).StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
        Assert.That(usage.Sum(d => d!["completion_tokens"]!.GetValue<long>()), Is.EqualTo(done.Usage!.CompletionTokens));
    }

    [Test]
    public async Task ShouldPrintTheTenantsUsage_WhenTheCliIsAsked()
    {
        using var tenant = await TenantAsync("cli");
        var done = await tenant.WaitForFinalAsync((await tenant.SubmitAsync(new { prompt = "count me", max_tokens = 5 })).Id);
        var cli = AppProcess.Dll("Cli", "llmserving");
        Assume.That(File.Exists(cli), Is.True, $"build the solution first: {cli}");
        var start = new System.Diagnostics.ProcessStartInfo("dotnet", $"\"{cli}\" usage --api {_producer.Client.BaseAddress}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["LLMSERVING_API_KEY"] = tenant.DefaultRequestHeaders.Authorization!.Parameter;
        using var process = System.Diagnostics.Process.Start(start)!;
        var output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();

        Assert.That(process.ExitCode, Is.Zero, await process.StandardError.ReadToEndAsync());
        Assert.That(output, Does.Contain($"cli-{TestServices.RunId}"));
        var total = output.Split('\n').Single(l => l.StartsWith("total", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(total[^4..^1], Is.EqualTo(new[] { "1", done.Usage!.PromptTokens.ToString(), done.Usage.CompletionTokens.ToString() }),
            "jobs, prompt and completion tokens: the tenant's one job");
    }

    [Test]
    public async Task ShouldListFilesByPurposeAndDeleteOne_AndExpireOnePastItsTime()
    {
        using var tenant = await TenantAsync("filer");
        var keep = await tenant.UploadAsync(BatchApi.ChatLine("k", "keep"));
        var drop = await tenant.UploadAsync(BatchApi.ChatLine("d", "drop"));
        var expire = await tenant.UploadAsync(BatchApi.ChatLine("e", "expire"));

        var listed = (await tenant.GetFromJsonAsync<JsonNode>("/v1/files?purpose=batch"))!;
        using var deleted = await tenant.DeleteAsync($"/v1/files/{drop}");
        await TestDatabase.ScalarAsync($"WITH u AS (UPDATE files SET expires_at = now() - interval '1 second' WHERE id = '{expire}' RETURNING 1) SELECT count(*) FROM u");
        await Eventually.WaitUntilAsync(async () => (await tenant.GetAsync($"/v1/files/{expire}")).StatusCode == HttpStatusCode.NotFound, timeoutSeconds: 20);

        Assert.That(listed["data"]!.AsArray().Select(f => f!["id"]!.GetValue<string>()), Is.EqualTo(new[] { expire, drop, keep }), "newest first");
        Assert.That(listed["data"]![0]!["expires_at"]!.GetValue<long>() - listed["data"]![0]!["created_at"]!.GetValue<long>(), Is.EqualTo(30 * 86_400),
            "batch files expire after 30 days by default");
        Assert.That((await deleted.Content.ReadFromJsonAsync<JsonNode>())!["deleted"]!.GetValue<bool>(), Is.True);
        Assert.That((await tenant.GetAsync($"/v1/files/{drop}")).StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
        Assert.That((await tenant.GetAsync($"/v1/files/{keep}")).StatusCode, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(await TestDatabase.ScalarAsync($"SELECT count(*) FROM file_chunks WHERE file_id IN ('{drop}', '{expire}')"), Is.Zero, "content goes too");
    }

    [Test]
    public async Task ShouldHonourExpiresAfter_AndRefuseOneOutsideOpenAisRange()
    {
        using var tenant = await TenantAsync("expiry");
        using var ok = await tenant.PostAsync("/v1/files", Form(("expires_after[anchor]", "created_at"), ("expires_after[seconds]", "7200")));
        using var tooShort = await tenant.PostAsync("/v1/files", Form(("expires_after[anchor]", "created_at"), ("expires_after[seconds]", "60")));
        var file = (await ok.Content.ReadFromJsonAsync<JsonNode>())!;

        Assert.That(file["expires_at"]!.GetValue<long>() - file["created_at"]!.GetValue<long>(), Is.EqualTo(7200));
        Assert.That(tooShort.StatusCode, Is.EqualTo(HttpStatusCode.BadRequest));
        Assert.That(await tooShort.Content.ReadAsStringAsync(), Does.Contain("3600 (1 hour) to 2592000"));
    }

    private static MultipartFormDataContent Form(params (string Name, string Value)[] fields)
    {
        var form = BatchApi.Form(BatchApi.ChatLine("x", "x"), "batch");
        foreach (var (name, value) in fields)
        {
            form.Add(new StringContent(value), name);
        }

        return form;
    }

    [Test]
    public async Task ShouldReportBatchUsage_AndSetItsOutputExpiry()
    {
        using var tenant = await TenantAsync("batcher");
        var file = await tenant.UploadAsync(BatchApi.ChatLine("a", "one") + "\n" + BatchApi.ChatLine("b", "two"));
        using var created = await tenant.PostAsJsonAsync("/v1/batches", new
        {
            input_file_id = file, endpoint = "/v1/chat/completions", completion_window = "24h",
            output_expires_after = new { anchor = "created_at", seconds = 3600 },
        });
        var id = (await created.Content.ReadFromJsonAsync<JsonNode>())!["id"]!.GetValue<string>();
        var batch = await tenant.WaitForBatchAsync(id, TimeSpan.FromSeconds(60), "completed");
        var output = (await tenant.GetFromJsonAsync<JsonNode>($"/v1/files/{batch.Str("output_file_id")}"))!;

        Assert.That(batch["usage"]!["output_tokens"]!.GetValue<long>(), Is.EqualTo(16), "two lines of 8 tokens");
        Assert.That(batch["usage"]!["input_tokens"]!.GetValue<long>(), Is.GreaterThan(0));
        Assert.That(batch["output_expires_after"]!["seconds"]!.GetValue<int>(), Is.EqualTo(3600));
        Assert.That(output["expires_at"]!.GetValue<long>() - output["created_at"]!.GetValue<long>(), Is.InRange(3599, 3601));
    }

    [Test]
    public async Task ShouldRefuseToDeleteAFile_WhileABatchReadsIt()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-retention-idle";
        try
        {
            await using var idle = await ProducerInstance.StartAsync(queue);
            var file = await idle.Client.UploadAsync(BatchApi.ChatLine("a", "waiting"));
            var batch = await idle.Client.CreateBatchAsync(file);
            await idle.Client.WaitForBatchAsync(batch.Str("id")!, TimeSpan.FromSeconds(30), "in_progress");

            using var refused = await idle.Client.DeleteAsync($"/v1/files/{file}");

            Assert.That(refused.StatusCode, Is.EqualTo(HttpStatusCode.Conflict));
            Assert.That((await idle.Client.GetAsync($"/v1/files/{file}")).StatusCode, Is.EqualTo(HttpStatusCode.OK));
            using var cancel = await idle.Client.PostAsync($"/v1/batches/{batch.Str("id")}/cancel", null);
        }
        finally
        {
            await Broker.DeleteAsync(queue, queue + "-batch");
        }
    }
}
