using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>API keys per tenant: nobody sees another tenant's jobs, files or batches; the admin key manages keys.</summary>
[TestFixture]
[NonParallelizable]
public sealed class TenancyTests
{
    private const string Admin = "admin-secret-for-tests";
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-tenancy";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue, new Dictionary<string, string?> { ["Producer:AdminKey"] = Admin });
        _worker = await WorkerInstance.StartAsync(_queue);
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    [Test]
    public async Task ShouldKeepEachTenantsDataToItself_WhenTwoTenantsUseTheirKeys()
    {
        var alice = Client(await CreateKeyAsync("alice"));
        var bob = Client(await CreateKeyAsync("bob"));

        var job = await alice.SubmitAsync(new { prompt = "Alice's secret", max_tokens = 4 });
        var done = await alice.WaitForFinalAsync(job.Id);
        using var bobReadsJob = await bob.GetAsync($"/v1/jobs/{job.Id}");
        using var bobCancels = await bob.PostAsync($"/v1/jobs/{job.Id}/cancel", null);
        var fileId = await alice.UploadAsync(BatchApi.ChatLine("a1", "hello"));
        using var bobReadsFile = await bob.GetAsync($"/v1/files/{fileId}/content");
        using var bobBatchesAliceFile = await bob.PostAsJsonAsync("/v1/batches", new { input_file_id = fileId, endpoint = "/v1/chat/completions", completion_window = "24h" });
        var batch = await alice.CreateBatchAsync(fileId);
        using var bobReadsBatch = await bob.GetAsync($"/v1/batches/{batch.Str("id")}");
        var bobsList = JsonNode.Parse(await bob.GetStringAsync("/v1/batches"))!;

        Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded));
        Assert.That((int)bobReadsJob.StatusCode, Is.EqualTo(404));
        Assert.That((int)bobCancels.StatusCode, Is.EqualTo(404));
        Assert.That((int)bobReadsFile.StatusCode, Is.EqualTo(404));
        Assert.That((int)bobBatchesAliceFile.StatusCode, Is.EqualTo(404));
        Assert.That((int)bobReadsBatch.StatusCode, Is.EqualTo(404));
        Assert.That(bobsList["data"]!.AsArray(), Is.Empty);
        Assert.That((await alice.GetJobAsync(job.Id)).OutputText, Is.EqualTo(done.OutputText));
    }

    [Test]
    public async Task ShouldRejectRequests_WhenTheKeyIsMissingWrongRevokedOrTheAdminKey()
    {
        using var anonymous = new HttpClient { BaseAddress = _producer.Client.BaseAddress };
        var created = await CreateKeyRecordAsync("carol");
        var carol = Client(created["key"]!.GetValue<string>());
        var accepted = await carol.SubmitAsync(new { prompt = "before revoke", max_tokens = 2 });

        using var missing = await anonymous.GetAsync($"/v1/jobs/{accepted.Id}");
        using var wrong = await Client("lls_not-a-key").GetAsync($"/v1/jobs/{accepted.Id}");
        using var adminOnJobs = await Client(Admin).GetAsync($"/v1/jobs/{accepted.Id}");
        using var tenantOnAdmin = await carol.PostAsJsonAsync("/v1/admin/keys", new { tenant_id = "mallory" });
        using var revoke = await Client(Admin).DeleteAsync($"/v1/admin/keys/{created["id"]}");
        using var revoked = await carol.GetAsync($"/v1/jobs/{accepted.Id}");
        using var docs = await anonymous.GetAsync("/openapi/v1.json");

        Assert.That((int)missing.StatusCode, Is.EqualTo(401));
        Assert.That(await missing.Content.ReadAsStringAsync(), Does.Contain("Bearer"));
        Assert.That((int)wrong.StatusCode, Is.EqualTo(401));
        Assert.That((int)adminOnJobs.StatusCode, Is.EqualTo(403));
        Assert.That((int)tenantOnAdmin.StatusCode, Is.EqualTo(403));
        Assert.That((int)revoke.StatusCode, Is.EqualTo(204));
        Assert.That((int)revoked.StatusCode, Is.EqualTo(401));
        Assert.That(await revoked.Content.ReadAsStringAsync(), Does.Contain("revoked"));
        Assert.That((int)docs.StatusCode, Is.EqualTo(200), "documentation stays open");
        await Client(await CreateKeyAsync("carol")).WaitForFinalAsync(accepted.Id); // let it finish before teardown
    }

    [Test]
    public async Task ShouldGuardTheHangfireDashboardWithTheAdminKey()
    {
        using var anonymous = new HttpClient { BaseAddress = _producer.Client.BaseAddress };
        using var admin = new HttpClient { BaseAddress = _producer.Client.BaseAddress };
        admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("admin:" + Admin)));
        using var tenant = new HttpClient { BaseAddress = _producer.Client.BaseAddress };
        tenant.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("x:" + await CreateKeyAsync("dave"))));

        using var denied = await anonymous.GetAsync("/hangfire");
        using var deniedTenant = await tenant.GetAsync("/hangfire");
        using var allowed = await admin.GetAsync("/hangfire");

        Assert.That((int)denied.StatusCode, Is.EqualTo(401));
        Assert.That((int)deniedTenant.StatusCode, Is.EqualTo(401));
        Assert.That((int)allowed.StatusCode, Is.EqualTo(200));
        Assert.That(await allowed.Content.ReadAsStringAsync(), Does.Contain("Hangfire"));
    }

    private HttpClient Client(string key)
    {
        var client = new HttpClient { BaseAddress = _producer.Client.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return client;
    }

    private async Task<string> CreateKeyAsync(string tenant) => (await CreateKeyRecordAsync(tenant))["key"]!.GetValue<string>();

    private async Task<JsonNode> CreateKeyRecordAsync(string tenant)
    {
        using var response = await Client(Admin).PostAsJsonAsync("/v1/admin/keys", new { tenant_id = tenant });
        var text = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(201), text);
        return JsonNode.Parse(text)!;
    }
}
