using LlmServing.Contracts;
using LlmServing.ResultStore;
using LlmServing.ResultStore.Jobs;
using LlmServing.Tests.Infrastructure;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace LlmServing.Tests;

/// <summary>State changes on the real database are idempotent and never move a job back from a final state.</summary>
[TestFixture]
public sealed class ResultStoreTests
{
    private IHost _host = null!;
    private JobStore _store = null!;

    [OneTimeSetUp]
    public async Task StartAsync()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            ContentRootPath = Directory.CreateTempSubdirectory("llmserving-store-").FullName,
            EnvironmentName = "Testing",
        });
        builder.Configuration["ConnectionStrings:Postgres"] = TestServices.Postgres;
        builder.AddResultStore();
        _host = builder.Build();
        await _host.StartAsync(); // applies migrations
        _store = _host.Services.GetRequiredService<JobStore>();
    }

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _host.StopAsync();
        _host.Dispose();
    }

    [Test]
    public async Task ShouldChangeNothing_WhenTheSameJobIsCompletedTwice()
    {
        var id = await NewJobAsync();
        await _store.TryStartAsync(id, "w1", CancellationToken.None);

        var first = await _store.CompleteAsync(id, new JobResult("first", "length", 3, 4), CancellationToken.None);
        var second = await _store.CompleteAsync(id, new JobResult("second", "stop", 9, 9), CancellationToken.None);

        var job = (await _store.FindAsync(id, Tenants.Default, CancellationToken.None))!;
        Assert.Multiple(() =>
        {
            Assert.That(first, Is.True);
            Assert.That(second, Is.False);
            Assert.That(job.OutputText, Is.EqualTo("first"));
            Assert.That(job.CompletionTokens, Is.EqualTo(4));
        });
    }

    [Test]
    public async Task ShouldStoreAGroupInsertedJobExactlyAsASingleInsertWould()
    {
        Job Sample() => new()
        {
            Id = Guid.CreateVersion7(), TenantId = "group-insert", RequestHash = "ABC123", Request = """{"prompt":"same","jobId":"x"}""",
            Deadline = DateTimeOffset.UtcNow.AddMinutes(5).AddTicks(-(DateTimeOffset.UtcNow.Ticks % 10)), Queue = "llm-jobs-group",
            WebhookUrl = "http://127.0.0.1:9/hook", EstimatedTokens = 42,
        };
        var single = Sample();
        var grouped = Sample();
        grouped.Deadline = single.Deadline;

        await _store.CreateAsync(single, CancellationToken.None);
        var written = await _store.CreateManyAsync([grouped], CancellationToken.None);

        Assert.That(written, Is.EqualTo(new[] { true }));
        var a = (await _store.FindAsync(single.Id, "group-insert", CancellationToken.None))!;
        var b = (await _store.FindAsync(grouped.Id, "group-insert", CancellationToken.None))!;
        foreach (var property in typeof(Job).GetProperties().Where(p => p.Name is not (nameof(Job.Id) or nameof(Job.CreatedAt))))
        {
            Assert.That(property.GetValue(b), Is.EqualTo(property.GetValue(a)), $"{property.Name}: a property the group insert drops or changes");
        }
    }

    [Test]
    public async Task ShouldReturnTheClaimedJobAsEfCoreReadsIt_EveryProperty()
    {
        var job = new Job
        {
            Id = Guid.CreateVersion7(), TenantId = "claim-mapping", IdempotencyKey = "key-1", RequestHash = "HASH", Request = """{"prompt":"x"}""",
            Deadline = DateTimeOffset.UtcNow.AddMinutes(10), Queue = "llm-jobs-mapping", WebhookUrl = "http://127.0.0.1:9/hook", EstimatedTokens = 7,
        };
        await _store.CreateAsync(job, CancellationToken.None);

        var claimed = (await _store.TryStartManyAsync([new StartRequest(job.Id, "w-map", false, TimeSpan.FromMinutes(1))], CancellationToken.None))[0];

        var read = (await _store.FindAsync(job.Id, "claim-mapping", CancellationToken.None))!;
        Assert.That(claimed, Is.Not.Null);
        foreach (var property in typeof(Job).GetProperties())
        {
            Assert.That(property.GetValue(claimed), Is.EqualTo(property.GetValue(read)), $"{property.Name}: the claim's column mapping differs from EF Core's");
        }
    }

    [Test]
    public async Task ShouldClaimEachJobOnce_WhenAGroupAsksForTheSameJobTwice()
    {
        var id = await NewJobAsync();
        var other = await NewJobAsync();

        var claims = await _store.TryStartManyAsync(
            [new StartRequest(id, "w1", false, TimeSpan.FromMinutes(1)), new StartRequest(other, "w1", false, TimeSpan.FromMinutes(1)),
             new StartRequest(id, "w1", false, TimeSpan.FromMinutes(1))], CancellationToken.None);

        Assert.That(claims[0]?.Status, Is.EqualTo(JobStatuses.Running));
        Assert.That(claims[0]?.Attempts, Is.EqualTo(1));
        Assert.That(claims[1]?.Status, Is.EqualTo(JobStatuses.Running));
        Assert.That(claims[2], Is.Null, "the second copy in one group is a duplicate, not a second run");
        var again = await _store.TryStartManyAsync([new StartRequest(id, "w2", false, TimeSpan.FromMinutes(1))], CancellationToken.None);
        Assert.That(again[0], Is.Null, "a running job is claimed again only by a redelivery");
    }

    [Test]
    public async Task ShouldWriteEachResultOfAGroup_AndReportTheOnesAlreadyFinal()
    {
        var done = await NewJobAsync();
        var open = await NewJobAsync();
        await _store.TryStartAsync(done, "w1", CancellationToken.None);
        await _store.TryStartAsync(open, "w1", CancellationToken.None);
        await _store.CompleteAsync(done, new JobResult("first", "stop", 1, 1), CancellationToken.None);

        var written = await _store.WriteResultsAsync(
            [new ResultWrite(done, JobStatuses.Succeeded, new JobResult("late", "stop", 2, 2)),
             new ResultWrite(open, JobStatuses.Cancelled, new JobResult("so\0far", "cancelled", 3, 2) { CachedTokens = 1, LogprobsJson = """{"content":[]}""" })],
            CancellationToken.None);

        Assert.That(written, Is.EqualTo(new[] { false, true }));
        var first = (await _store.FindAsync(done, Tenants.Default, CancellationToken.None))!;
        var second = (await _store.FindAsync(open, Tenants.Default, CancellationToken.None))!;
        Assert.That(first.OutputText, Is.EqualTo("first"), "a final job keeps its result");
        Assert.That(second.Status, Is.EqualTo(JobStatuses.Cancelled));
        Assert.That(second.OutputText, Is.EqualTo("so\uFFFDfar"));
        Assert.That((second.PromptTokens, second.CompletionTokens, second.CachedTokens), Is.EqualTo((3, 2, 1)));
        Assert.That(second.Logprobs, Does.Contain("content"));
        Assert.That(second.FinishedAt, Is.Not.Null);
    }

    [Test]
    public async Task ShouldNotDeadlock_WhenGroupStatementsUpdateTheSameJobsInDifferentOrders()
    {
        var ids = new List<Guid>();
        for (var i = 0; i < 24; i++)
        {
            var id = await NewJobAsync();
            await _store.TryStartAsync(id, "w1", CancellationToken.None);
            ids.Add(id);
        }

        // Leases, progress and confirms of the same running jobs, each statement listing them in its own order, side by
        // side: without one lock order, two such statements wait for each other and PostgreSQL kills one (40P01).
        var failures = new List<Exception>();
        await Task.WhenAll(Enumerable.Range(0, 6).Select(worker => Task.Run(async () =>
        {
            var random = new Random(worker);
            for (var round = 0; round < 40; round++)
            {
                var order = ids.OrderBy(_ => random.Next()).ToArray();
                try
                {
                    switch ((worker + round) % 3)
                    {
                        case 0:
                            await _store.RenewLeasesAsync(order, TimeSpan.FromMinutes(1), CancellationToken.None);
                            break;
                        case 1:
                            await _store.WriteProgressAsync(order, [.. order.Select(_ => "so far")], [.. order.Select(_ => round)], CancellationToken.None);
                            break;
                        default:
                            await _store.MarkPublishedManyAsync(order, CancellationToken.None);
                            break;
                    }
                }
                catch (Exception e)
                {
                    lock (failures)
                    {
                        failures.Add(e);
                    }
                }
            }
        })));

        Assert.That(failures.Select(f => f.Message), Is.Empty);
    }

    [Test]
    public async Task ShouldStoreTheOutput_WhenTheModelEmitsANulByte()
    {
        var id = await NewJobAsync();
        await _store.TryStartAsync(id, "w1", CancellationToken.None);

        var stored = await _store.CompleteAsync(id, new JobResult("a\0b", "length", 1, 3), CancellationToken.None);

        Assert.That(stored, Is.True);
        Assert.That((await _store.FindAsync(id, Tenants.Default, CancellationToken.None))!.OutputText, Is.EqualTo("a\uFFFDb"));
    }

    [Test]
    public async Task ShouldNotMoveBackwards_WhenAFinalJobIsClaimedOrFailed()
    {
        var id = await NewJobAsync();
        await _store.TryStartAsync(id, "w1", CancellationToken.None);
        await _store.CompleteAsync(id, new JobResult("done", "stop", 1, 1), CancellationToken.None);

        var claimed = await _store.TryStartAsync(id, "w2", CancellationToken.None);
        var failed = await _store.FailAsync(id, "late failure", null, CancellationToken.None);

        var job = (await _store.FindAsync(id, Tenants.Default, CancellationToken.None))!;
        Assert.Multiple(() =>
        {
            Assert.That(claimed, Is.Null);
            Assert.That(failed, Is.False);
            Assert.That(job.Status, Is.EqualTo(JobStatuses.Succeeded));
            Assert.That(job.Error, Is.Null);
            Assert.That(job.WorkerId, Is.EqualTo("w1"));
            Assert.That(job.Attempts, Is.EqualTo(1));
        });
    }

    [Test]
    public async Task ShouldCountAttempts_WhenARunningJobIsClaimedAgainAfterARedelivery()
    {
        var id = await NewJobAsync();
        await _store.TryStartAsync(id, "crashed-worker", CancellationToken.None);

        var again = await _store.TryStartAsync(id, "w2", CancellationToken.None);

        Assert.That(again!.Attempts, Is.EqualTo(2));
        Assert.That(again.WorkerId, Is.EqualTo("w2"));
        Assert.That(again.Status, Is.EqualTo(JobStatuses.Running));
    }

    [Test]
    public async Task ShouldReturnTheExistingJob_WhenTheIdempotencyKeyIsUsedAgain()
    {
        var key = Guid.NewGuid().ToString();
        var (first, created) = await _store.CreateAsync(new Job { Id = Guid.NewGuid(), IdempotencyKey = key, QueuedAt = DateTimeOffset.UtcNow }, CancellationToken.None);
        var (second, createdAgain) = await _store.CreateAsync(new Job { Id = Guid.NewGuid(), IdempotencyKey = key, QueuedAt = DateTimeOffset.UtcNow }, CancellationToken.None);

        Assert.That(created, Is.True);
        Assert.That(createdAgain, Is.False);
        Assert.That(second.Id, Is.EqualTo(first.Id));
        await using var db = await _host.Services.GetRequiredService<IDbContextFactory<LlmServingDbContext>>().CreateDbContextAsync();
        Assert.That(await db.Jobs.CountAsync(j => j.IdempotencyKey == key), Is.EqualTo(1));
    }

    private async Task<Guid> NewJobAsync()
    {
        // Already "published", so that no Producer's publish sweep picks these bare rows up.
        var (job, _) = await _store.CreateAsync(new Job { Id = Guid.NewGuid(), QueuedAt = DateTimeOffset.UtcNow }, CancellationToken.None);
        return job.Id;
    }
}
