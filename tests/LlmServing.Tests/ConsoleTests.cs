using System.Net;
using System.Text.RegularExpressions;
using LlmServing.Contracts;
using LlmServing.Tests.Infrastructure;
using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>
/// The operator's console in a real browser (Chromium through Playwright) against a real Producer, worker, RabbitMQ
/// and PostgreSQL: sign-in and tenant scope, live updates without reloads, a batch's progress, dead-letter replay and
/// cancel. Every page must hold no console error.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class ConsoleTests
{
    private const string AdminKey = "console-admin-key-0123456789";
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-console";
    private ProducerInstance _producer = null!;
    private WorkerInstance _worker = null!;
    private readonly EnginePacer _pacer = new();
    private ConsoleBrowser _browser = null!;
    private HttpClient _admin = null!;
    private Uri Base => _producer.Client.BaseAddress!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        _producer = await ProducerInstance.StartAsync(_queue, Settings());
        _worker = await WorkerInstance.StartAsync(_queue, new Dictionary<string, string?> { ["Inference:Slots"] = "2" }, _pacer.Register);
        _browser = await ConsoleBrowser.LaunchAsync();
        _admin = TenantClients.WithKey(Base, AdminKey);
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        _admin.Dispose();
        await _browser.DisposeAsync();
        await _worker.DisposeAsync();
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    [SetUp]
    public void ClearErrors() => _browser.ClearErrors();

    [TearDown]
    public async Task NoConsoleErrorsAsync()
    {
        await _browser.CloseAllAsync();
        Assert.That(_browser.Errors, Is.Empty, "the pages logged errors in the browser's console");
    }

    [Test]
    public async Task ShouldNeedAKey_AndShowATenantOnlyItsOwnJobs()
    {
        var tenantA = await _admin.TenantAsync($"console-a-{TestServices.RunId}");
        var tenantB = await _admin.TenantAsync($"console-b-{TestServices.RunId}");
        var jobA = await tenantA.SubmitAsync(new { prompt = "Tenant A", max_tokens = 2 });
        var jobB = await tenantB.SubmitAsync(new { prompt = "Tenant B", max_tokens = 2 });

        // No session: every console page sends the visitor to sign in; a wrong key is refused there.
        using (var anonymous = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = Base })
        {
            using var response = await anonymous.GetAsync($"/console/jobs/{jobA.Id}");
            Assert.That(response.StatusCode, Is.EqualTo(HttpStatusCode.Redirect));
            Assert.That(response.Headers.Location?.ToString(), Does.StartWith("/console/login"));
        }

        var stranger = await _browser.NewPageAsync(Base);
        await stranger.GotoAsync("/console/jobs");
        await stranger.FillAsync("#key", "lls_not-a-key-of-anyone");
        await stranger.ClickAsync("#sign-in");
        await Expect(stranger.Locator("#login-error")).ToBeVisibleAsync();
        Assert.That(new Uri(stranger.Url).AbsolutePath, Is.EqualTo("/console/login"));

        // A tenant key: its own jobs only, no admin pages.
        var page = await _browser.SignInAsync(Base, Key(tenantA));
        await Expect(page.Locator("#signed-in-as")).ToHaveTextAsync($"tenant console-a-{TestServices.RunId}");
        await page.GotoAsync("/console/jobs");
        await Expect(page.Locator($"tr[data-job='{jobA.Id}']")).ToBeVisibleAsync();
        await Expect(page.Locator($"tr[data-job='{jobB.Id}']")).ToHaveCountAsync(0);
        await Expect(page.Locator("header nav a", new() { HasText = "Dead letters" })).ToHaveCountAsync(0);
        var other = await page.GotoAsync($"/console/jobs/{jobB.Id}");
        Assert.That(other!.Status, Is.EqualTo(404), "another tenant's job does not exist for this key");
        var deadLetters = await page.GotoAsync("/console/dead-letters");
        Assert.That(deadLetters!.Status, Is.EqualTo(403));
        var tenants = await page.GotoAsync("/console/tenants");
        Assert.That(tenants!.Status, Is.EqualTo(403));

        // The admin key: every tenant.
        var admin = await _browser.SignInAsync(Base, AdminKey);
        await admin.GotoAsync("/console/jobs");
        await Expect(admin.Locator($"tr[data-job='{jobA.Id}']")).ToBeVisibleAsync();
        await Expect(admin.Locator($"tr[data-job='{jobB.Id}']")).ToBeVisibleAsync();

        // Revoking the tenant's key ends its console session at once.
        await admin.GotoAsync("/console/tenants");
        await admin.Locator($"#keys tr:has(td:text-is('console-a-{TestServices.RunId}')) button").First.ClickAsync();
        await Expect(admin.Locator("#notice")).ToHaveTextAsync("Key revoked.");
        await page.GotoAsync("/console/jobs");
        Assert.That(new Uri(page.Url).AbsolutePath, Is.EqualTo("/console/login"));

        // A form posted from another origin is refused even with a valid session cookie.
        var cookies = await admin.Context.CookiesAsync();
        var session = cookies.Single(c => c.Name == "llmserving_console");
        using var crossSite = new HttpClient { BaseAddress = Base };
        using var forged = new HttpRequestMessage(HttpMethod.Post, $"/console/jobs/{jobB.Id}?handler=cancel");
        forged.Headers.Add("Cookie", $"{session.Name}={session.Value}");
        forged.Headers.Add("Origin", "http://127.0.0.1:1");
        using var refused = await crossSite.SendAsync(forged);
        Assert.That(refused.StatusCode, Is.EqualTo(HttpStatusCode.Forbidden));
        _browser.ForgetExpectedStatuses(401, 403, 404); // the wrong key, the other tenant's job and the admin pages, asserted above
    }

    [Test]
    public async Task ShouldRefuseSignIns_WhenAnAddressKeepsSendingUnknownKeys()
    {
        // A Producer of its own: the refusal is per address, and every test here signs in from 127.0.0.1.
        var queue = $"llm-jobs-test-{TestServices.RunId}-console-guess";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, Settings());
            using var client = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = producer.Client.BaseAddress };
            async Task<HttpStatusCode> SignInAsync(string key)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/console/login")
                {
                    Content = new FormUrlEncodedContent(new Dictionary<string, string> { ["key"] = key }),
                };
                request.Headers.Add("Origin", producer.Client.BaseAddress!.GetLeftPart(UriPartial.Authority));
                using var response = await client.SendAsync(request);
                return response.StatusCode;
            }

            var answers = new List<HttpStatusCode>();
            for (var i = 0; i < InvalidKeyLimiter.PerMinute + 1; i++)
            {
                answers.Add(await SignInAsync($"lls_guess-{i}"));
            }

            Assert.That(answers.Take(InvalidKeyLimiter.PerMinute), Is.All.EqualTo(HttpStatusCode.Unauthorized));
            Assert.That(answers[^1], Is.EqualTo(HttpStatusCode.TooManyRequests));
            // An address may be an ingress or a NAT shared by many people: the right key still signs in, guesses do not.
            Assert.That(await SignInAsync(AdminKey), Is.EqualTo(HttpStatusCode.Found), "the admin key from the blocked address");
            Assert.That(await SignInAsync("lls_guess-more"), Is.EqualTo(HttpStatusCode.TooManyRequests));
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldShowASubmittedJobAndItsSuccess_WithoutAReload()
    {
        var tenant = await _admin.TenantAsync($"console-live-{TestServices.RunId}");
        var page = await _browser.SignInAsync(Base, Key(tenant));
        await page.GotoAsync("/console/jobs");
        await MarkAsync(page);

        // Seeded: the output is compared as the browser shows it, and an unseeded random model can emit a C1 control character,
        // which HTML maps to another one (&#x85; shows as an ellipsis).
        var job = await tenant.SubmitAsync(new { prompt = "Appear live", max_tokens = 200, ignore_eos = true, seed = 7 });

        var row = page.Locator($"tr[data-job='{job.Id}']");
        await Expect(row).ToBeVisibleAsync();
        await Expect(row.Locator("[data-status]")).ToHaveAttributeAsync("data-status", JobStatuses.Succeeded, new() { Timeout = 60_000 });
        await AssertNotReloadedAsync(page);

        // The job's own page: request, output, attempts and the timeline.
        await row.Locator("a").First.ClickAsync();
        await Expect(page.Locator("#job-status [data-status]")).ToHaveAttributeAsync("data-status", JobStatuses.Succeeded);
        await Expect(page.Locator("#job-request")).ToContainTextAsync("Appear live");
        await Expect(page.Locator("#job-attempts")).ToHaveTextAsync("1");
        var done = await tenant.WaitForFinalAsync(job.Id);
        await Expect(page.Locator("#job-output")).ToHaveTextAsync(done.OutputText!);
    }

    [Test]
    public async Task ShouldCancelARunningJob_FromItsPage()
    {
        var tenant = await _admin.TenantAsync($"console-cancel-{TestServices.RunId}");
        // Held in the engine after a few tokens until the cancel reaches it: running for as long as the page needs.
        using var hold = _pacer.HoldWhen("Cancel me from the console", afterTokens: 4);
        var job = await tenant.SubmitAsync(new { prompt = "Cancel me from the console", max_tokens = 3500, ignore_eos = true });
        await hold.WaitReachedAsync();
        var page = await _browser.SignInAsync(Base, Key(tenant));
        await page.GotoAsync($"/console/jobs/{job.Id}");
        await Expect(page.Locator("#job-status [data-status]")).ToHaveAttributeAsync("data-status", JobStatuses.Running);

        await page.ClickAsync("#cancel-job");

        await Expect(page.Locator("#job-status [data-status]")).ToHaveAttributeAsync("data-status", JobStatuses.Cancelled, new() { Timeout = 30_000 });
        var final = await tenant.WaitForFinalAsync(job.Id);
        Assert.That(final.Status, Is.EqualTo(JobStatuses.Cancelled));
        Assert.That(final.Usage?.CompletionTokens ?? 0, Is.LessThan(3500), "stopped before its end");
        await Expect(page.Locator("#cancel-job")).ToHaveCountAsync(0);
    }

    [Test]
    public async Task ShouldAdvanceARunningBatchsProgressBar_WithoutAReload()
    {
        var tenant = await _admin.TenantAsync($"console-batch-{TestServices.RunId}");
        var lines = Enumerable.Range(0, 8).Select(i => BatchApi.ChatLine($"line-{i}", $"Progress {i}", maxTokens: 300));
        // With two slots, the fifth line to start means three have ended: the engine holds there until the page has
        // shown a value between 0 and 100, so the bar is seen mid-way however fast the lines run.
        using var hold = _pacer.HoldWhen("Progress ", afterJobs: 5);
        var fileId = await tenant.UploadAsync(string.Join("\n", lines) + "\n");
        var page = await _browser.SignInAsync(Base, Key(tenant));
        var batch = await tenant.CreateBatchAsync(fileId);
        var id = batch.Str("id")!;
        await page.GotoAsync($"/console/batches/{id}");
        await MarkAsync(page);

        var seen = new SortedSet<int>();
        var bar = page.Locator($"#batch [data-batch-progress='{id}']");
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while (DateTime.UtcNow < deadline)
        {
            // The status first: once it reads completed the page is final, so the bar read after it shows the end.
            var status = await page.Locator("#batch-status [data-status]").GetAttributeAsync("data-status");
            if (int.TryParse(await bar.GetAttributeAsync("aria-valuenow"), out var value))
            {
                seen.Add(value);
                if (value is > 0 and < 100)
                {
                    hold.Release();
                }
            }

            if (status == "completed")
            {
                break;
            }

            await Task.Delay(100);
        }

        await Expect(page.Locator("#batch-status [data-status]")).ToHaveAttributeAsync("data-status", "completed");
        Assert.That(seen.Max, Is.EqualTo(100), $"progress seen: {string.Join(", ", seen)}");
        Assert.That(seen.Count(v => v is > 0 and < 100), Is.GreaterThanOrEqualTo(1), $"the bar moved through intermediate values: {string.Join(", ", seen)}");
        await AssertNotReloadedAsync(page);

        // The output file downloads from the batch page, with the session (no API key needed).
        await Expect(page.Locator("#output-file")).ToBeVisibleAsync();
        var download = await page.APIRequest.GetAsync((await page.Locator("#output-file").GetAttributeAsync("href"))!);
        Assert.That(download.Status, Is.EqualTo(200));
        Assert.That((await download.TextAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries), Has.Length.EqualTo(8));
    }

    [Test]
    public async Task ShouldReplayADeadLetter_AndItsJobThenSucceeds()
    {
        var queue = $"llm-jobs-test-{TestServices.RunId}-console-dlq";
        try
        {
            await using var producer = await ProducerInstance.StartAsync(queue, Settings());
            using var admin = TenantClients.WithKey(producer.Client.BaseAddress!, AdminKey);
            var tenant = await admin.TenantAsync($"console-dlq-{TestServices.RunId}");
            Guid jobId;
            await using (var poisoned = await WorkerInstance.StartAsync(queue, services: EngineFaults.Poison("POISON")))
            {
                jobId = (await tenant.SubmitAsync(new { prompt = "A POISON pill", max_tokens = 4 })).Id;
                var failed = await tenant.WaitForFinalAsync(jobId);
                Assert.That(failed.Status, Is.EqualTo(JobStatuses.Failed));
                await Eventually.WaitUntilAsync(async () => await Broker.ErrorCountAsync(queue) == 1);
            }

            await using var healthy = await WorkerInstance.StartAsync(queue);
            var page = await _browser.SignInAsync(producer.Client.BaseAddress!, AdminKey);
            await page.GotoAsync("/console/dead-letters");
            var row = page.Locator($"tr[data-job='{jobId}']");
            await Expect(row).ToContainTextAsync("Fault injection");

            await row.Locator("a.replay").ClickAsync();
            await Expect(page.Locator("h1")).ToHaveTextAsync("Replay a dead letter");
            await page.ClickAsync("#confirm");

            await Expect(page.Locator("#notice")).ToContainTextAsync("Replayed");
            await page.GotoAsync($"/console/jobs/{jobId}");
            await Expect(page.Locator("#job-status [data-status]")).ToHaveAttributeAsync("data-status", JobStatuses.Succeeded, new() { Timeout = 60_000 });
            var done = await tenant.WaitForFinalAsync(jobId);
            Assert.That(done.Status, Is.EqualTo(JobStatuses.Succeeded));
            Assert.That(done.Error, Is.Null);
            Assert.That(await Broker.ErrorCountAsync(queue), Is.EqualTo(0), "the replayed message left the error queue");
            await page.GotoAsync("/console/dead-letters");
            await Expect(page.Locator($"tr[data-job='{jobId}']")).ToHaveCountAsync(0);
            await _browser.CloseAllAsync(); // before this test's Producer stops
        }
        finally
        {
            await Broker.DeleteAsync(queue);
        }
    }

    [Test]
    public async Task ShouldRenderEveryPageWithoutErrors_AndSaveTheOverviewScreenshot()
    {
        var page = await _browser.SignInAsync(Base, AdminKey);
        foreach (var path in new[] { "/console", "/console/jobs", "/console/batches", "/console/dead-letters", "/console/tenants", "/console/jobs?status=succeeded" })
        {
            var response = await page.GotoAsync(path);
            Assert.That(response!.Status, Is.EqualTo(200), path);
            await Expect(page.Locator("main h1")).ToBeVisibleAsync();
        }

        await page.GotoAsync("/console");
        await Expect(page.Locator("#lanes")).ToContainTextAsync(_queue);
        await Expect(page.Locator("svg[role='img']")).ToHaveCountAsync(2);
        // Keep the README's picture true: it is this page, as rendered by this run.
        var file = Path.Combine(Repository.Root, "docs", "console-overview.png");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = file, FullPage = true });
        Assert.That(new FileInfo(file).Length, Is.GreaterThan(10_000));
    }

    private static Dictionary<string, string?> Settings() => new()
    {
        ["Producer:AdminKey"] = AdminKey,
        ["Producer:ContextSize"] = "4096",
        ["Console:LiveRefresh"] = "00:00:00.500",
    };

    private static string Key(HttpClient tenant) => tenant.DefaultRequestHeaders.Authorization!.Parameter!;

    /// <summary>Leaves a mark in the page's window: it survives live updates, not a reload.</summary>
    private static Task MarkAsync(IPage page) => page.EvaluateAsync("() => { window.__notReloaded = 42; }");

    private static async Task AssertNotReloadedAsync(IPage page) =>
        Assert.That(await page.EvaluateAsync<int?>("() => window.__notReloaded ?? null"), Is.EqualTo(42), "the page was not reloaded");
}
