using System.Text.RegularExpressions;
using LlmServing.Contracts;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Options;
using LlmServing.Producer;
using LlmServing.Producer.OperatorConsole;

namespace LlmServing.Tests;

/// <summary>The console's pure parts: its charts and its session cookie. No servers.</summary>
[TestFixture]
public sealed class ConsolePartsTests
{
    [TestCase(0.0, 1.0)]
    [TestCase(0.3, 0.5)]
    [TestCase(7.0, 10.0)]
    [TestCase(100.0, 100.0)]
    [TestCase(101.0, 200.0)]
    [TestCase(4321.0, 5000.0)]
    public void ShouldRoundAnAxisUpToOneTwoOrFiveTimesAPowerOfTen(double value, double top) =>
        Assert.That(SvgCharts.NiceCeiling(value), Is.EqualTo(top).Within(1e-9));

    [Test]
    public void ShouldStackBarsInProportion_WithTheTallestAtFullHeight()
    {
        var buckets = new List<IReadOnlyDictionary<string, long>>
        {
            new Dictionary<string, long> { [JobStatuses.Succeeded] = 3, [JobStatuses.Failed] = 1 },
            new Dictionary<string, long>(),
            new Dictionary<string, long> { [JobStatuses.Succeeded] = 2 },
        };

        var svg = SvgCharts.StackedBars(buckets, [JobStatuses.Succeeded, JobStatuses.Failed], "Jobs <by> status", "-15 min");

        var heights = Regex.Matches(svg, "<rect x=\"[^\"]+\" y=\"[^\"]+\" width=\"[^\"]+\" height=\"([0-9.]+)\" fill=\"(#[0-9a-f]+)\"><title>([^<]+)</title>")
            .Select(m => (Height: double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), Title: m.Groups[3].Value))
            .ToList();
        Assert.That(heights.Select(h => h.Title), Is.EqualTo(new[] { "3 succeeded", "1 failed", "2 succeeded" }));
        var full = heights[0].Height + heights[1].Height;
        Assert.That(full, Is.EqualTo(148).Within(0.2), "the tallest bar (4 jobs) spans the plot");
        Assert.That(heights[0].Height, Is.EqualTo(full * 3 / 4).Within(0.2));
        Assert.That(heights[2].Height, Is.EqualTo(full / 2).Within(0.2));
        Assert.That(svg, Does.Contain("Jobs &lt;by&gt; status"), "titles are escaped");
        Assert.That(svg, Does.Not.Contain("<by>"));
    }

    [Test]
    public void ShouldDrawALineThroughEveryPoint_WithTheLatestValueLabelled()
    {
        var svg = SvgCharts.Line([0, 2.5, 10], "Tokens", "tokens/s", "-3 min");

        var points = Regex.Match(svg, "<polyline [^>]*points=\"([^\"]+)\"").Groups[1].Value.Split(' ');
        Assert.That(points, Has.Length.EqualTo(3));
        Assert.That(svg, Does.Contain("now 10 tokens/s, peak 10"));
    }

    [Test]
    public async Task ShouldAcceptItsOwnAdminSession_AndRefuseATamperedOrExpiredOrForeignOne()
    {
        var clock = new TestClock(DateTimeOffset.Parse("2026-11-28T10:00:00Z"));
        var session = Session("admin-key-for-unit-tests-1", clock);
        var cookie = await SignInAsync(session, "admin-key-for-unit-tests-1");
        Assert.That(cookie, Is.Not.Null.And.Not.Contains("admin-key"), "the cookie never holds the key");

        Assert.That((await ReadAsync(session, cookie!))?.IsAdmin, Is.True);
        Assert.That(await ReadAsync(session, cookie!.Replace("admin|", "admin|9")), Is.Null, "a changed payload fails the signature");
        Assert.That(await ReadAsync(Session("another-admin-key-entirely-2", clock), cookie), Is.Null, "another admin key signs differently");
        clock.Advance(TimeSpan.FromHours(8) + TimeSpan.FromSeconds(1));
        Assert.That(await ReadAsync(session, cookie), Is.Null, "expired after the session lifetime");
    }

    private static ConsoleSession Session(string adminKey, TimeProvider clock) =>
        new(Options.Create(new ProducerOptions { AdminKey = adminKey }), Options.Create(new ConsoleOptions()),
            new LlmServing.ResultStore.Tenants.ApiKeyStore(null!, clock), clock);

    /// <summary>Signs in with the admin key; the session cookie's value.</summary>
    private static async Task<string?> SignInAsync(ConsoleSession session, string adminKey)
    {
        var http = new DefaultHttpContext();
        Assert.That(await session.SignInAsync(http, adminKey, CancellationToken.None), Is.Not.Null);

        var header = http.Response.Headers.SetCookie.ToString();
        Assert.That(header, Does.Contain("httponly").IgnoreCase.And.Contain("samesite=strict").IgnoreCase);
        return Uri.UnescapeDataString(Regex.Match(header, $"{ConsoleSession.CookieName}=([^;]+)").Groups[1].Value);
    }

    private static async Task<ConsoleUser?> ReadAsync(ConsoleSession session, string cookie)
    {
        var http = new DefaultHttpContext();
        http.Request.Headers.Cookie = $"{ConsoleSession.CookieName}={Uri.EscapeDataString(cookie)}";
        return await session.AuthenticateAsync(http);
    }

    [Test]
    public void ShouldGiveAReplayedJobsFinalEventAMessageIdOfItsOwn()
    {
        var job = Guid.CreateVersion7();
        Assert.That(ResultEventIds.ForJob(job, 0), Is.EqualTo(ResultEventIds.ForJob(job)), "never replayed: the id it always had");
        Assert.That(ResultEventIds.ForJob(job, 1), Is.Not.EqualTo(ResultEventIds.ForJob(job)));
        Assert.That(ResultEventIds.ForJob(job, 2), Is.Not.EqualTo(ResultEventIds.ForJob(job, 1)));
        Assert.That(ResultEventIds.ForJob(job, 1), Is.EqualTo(ResultEventIds.ForJob(job, 1)), "stable across redeliveries");
    }

    private sealed class TestClock(DateTimeOffset now) : TimeProvider
    {
        private DateTimeOffset _now = now;

        public void Advance(TimeSpan by) => _now += by;

        public override DateTimeOffset GetUtcNow() => _now;
    }
}
