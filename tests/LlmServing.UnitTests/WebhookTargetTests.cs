using System.Net;
using Microsoft.Extensions.Options;
using LlmServing.Producer.Application;

namespace LlmServing.Tests;

/// <summary>
/// Which webhook targets are refused, decided at validation. Names resolve through a resolver the test controls, so
/// no test opens a connection anywhere: these machines may only reach loopback.
/// </summary>
public sealed class WebhookTargetTests
{
    private sealed class FakeResolver(Dictionary<string, IPAddress[]> names) : IWebhookHostResolver
    {
        public List<string> Asked { get; } = [];

        public Task<IPAddress[]> ResolveAsync(string host, CancellationToken ct)
        {
            Asked.Add(host);
            return names.TryGetValue(host, out var a) ? Task.FromResult(a) : throw new System.Net.Sockets.SocketException(11001);
        }
    }

    // Loopback only: tests may name no other address, not even one that is refused without a connection. The other
    // non-public ranges (private, link-local, CGNAT, unique local, ...) are refused by the same check, WebhookTargetPolicy.IsPublic.
    private static readonly FakeResolver Names = new(new Dictionary<string, IPAddress[]>
    {
        ["hooks.internal.test"] = [IPAddress.Loopback],
        ["v6.internal.test"] = [IPAddress.IPv6Loopback],
        ["mapped.internal.test"] = [IPAddress.Loopback.MapToIPv6()],
    });

    private static WebhookTargetPolicy Policy(bool allowPrivate = false) =>
        new(Names, Options.Create(new WebhookOptions { AllowPrivateTargets = allowPrivate }));

    [TestCase("http://127.0.0.1:8080/hook", "non-public address (127.0.0.1)")]
    [TestCase("http://127.10.20.30/hook", "non-public address (127.10.20.30)")]
    [TestCase("http://[::1]/hook", "non-public address (::1)")]
    [TestCase("http://hooks.internal.test/", "non-public address (127.0.0.1)")]
    [TestCase("https://v6.internal.test/", "non-public address (::1)")]
    [TestCase("https://mapped.internal.test/", "non-public address")]
    [TestCase("https://nowhere.internal.test/", "does not resolve")]
    [TestCase("ftp://hooks.internal.test/x", "absolute http:// or https:// URL")]
    [TestCase("file:///etc/passwd", "absolute http:// or https:// URL")]
    [TestCase("/relative/path", "absolute http:// or https:// URL")]
    [TestCase("https://user:secret@hooks.internal.test/", "must not hold credentials")]
    public async Task ShouldRefuse_WhenTheTargetIsNotAPublicHttpUrl(string url, string expected) =>
        Assert.That(await Policy().CheckAsync(url, default), Does.Contain(expected));

    [Test]
    public async Task ShouldResolveNamesThroughTheSeam_WhenCheckingATarget()
    {
        await Policy().CheckAsync("https://hooks.internal.test/llm", default);

        Assert.That(Names.Asked, Does.Contain("hooks.internal.test"), "names resolve through the seam the test controls");
    }

    [Test]
    public async Task ShouldAcceptLoopback_WhenConfigurationAllowsPrivateTargets() =>
        Assert.That(await Policy(allowPrivate: true).CheckAsync("http://127.0.0.1:9000/hook", default), Is.Null);

    [Test]
    public void ShouldBackOffExponentiallyUpToTheCap()
    {
        var options = new WebhookOptions { FirstRetryDelay = TimeSpan.FromSeconds(5), MaxRetryDelay = TimeSpan.FromHours(1) };

        Assert.That(options.RetryDelay(1).TotalSeconds, Is.InRange(4, 6));
        Assert.That(options.RetryDelay(4).TotalSeconds, Is.InRange(32, 48));
        Assert.That(options.RetryDelay(40).TotalSeconds, Is.InRange(2880, 4320));
        var total = Enumerable.Range(1, 40).Sum(a => options.RetryDelay(a).TotalHours);
        Assert.That(total, Is.GreaterThan(24), "40 attempts span more than a day, so RetryFor (25 h) decides the end");
    }

    [TestCase("https://Hooks.Example.com/a/b?x=1", "https://hooks.example.com")]
    [TestCase("http://127.0.0.1:8080/never", "http://127.0.0.1:8080")]
    [TestCase("http://[::1]:9/x#y", "http://[::1]:9")]
    public void ShouldLimitDeliveriesPerSchemeHostAndPort(string url, string target) =>
        Assert.That(LlmServing.ResultStore.Webhooks.WebhookStore.Target(url), Is.EqualTo(target));
}
