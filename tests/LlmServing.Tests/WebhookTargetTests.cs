using System.Net;
using LlmServing.Producer.Webhooks;
using Microsoft.Extensions.Options;

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

    private static readonly FakeResolver Names = new(new Dictionary<string, IPAddress[]>
    {
        ["hooks.example.com"] = [IPAddress.Parse("93.184.216.34")],
        ["metadata.internal"] = [IPAddress.Parse("169.254.169.254")],
        ["intranet.example.com"] = [IPAddress.Parse("93.184.216.34"), IPAddress.Parse("10.1.2.3")],
        ["v6.example.com"] = [IPAddress.Parse("fd00::1")],
        ["mapped.example.com"] = [IPAddress.Parse("::ffff:192.168.1.1")],
    });

    private static WebhookTargetPolicy Policy(bool allowPrivate = false) =>
        new(Names, Options.Create(new WebhookOptions { AllowPrivateTargets = allowPrivate }));

    [Test]
    public async Task ShouldAccept_WhenEveryAddressOfTheHostIsPublic() =>
        Assert.That(await Policy().CheckAsync("https://hooks.example.com/llm?x=1", default), Is.Null);

    [TestCase("http://127.0.0.1:8080/hook", "non-public address (127.0.0.1)")]
    [TestCase("http://[::1]/hook", "non-public address (::1)")]
    [TestCase("http://10.0.0.7/hook", "non-public address (10.0.0.7)")]
    [TestCase("http://172.20.1.1/hook", "non-public address")]
    [TestCase("http://192.168.0.1/hook", "non-public address")]
    [TestCase("http://169.254.169.254/latest/meta-data", "non-public address")]
    [TestCase("http://100.64.0.1/", "non-public address")]
    [TestCase("http://0.0.0.0/", "non-public address")]
    [TestCase("http://[fe80::1]/", "non-public address")]
    [TestCase("http://metadata.internal/", "non-public address (169.254.169.254)")]
    [TestCase("https://intranet.example.com/", "non-public address (10.1.2.3)")]
    [TestCase("https://v6.example.com/", "non-public address (fd00::1)")]
    [TestCase("https://mapped.example.com/", "non-public address")]
    [TestCase("https://nowhere.example.com/", "does not resolve")]
    [TestCase("ftp://hooks.example.com/x", "absolute http:// or https:// URL")]
    [TestCase("file:///etc/passwd", "absolute http:// or https:// URL")]
    [TestCase("/relative/path", "absolute http:// or https:// URL")]
    [TestCase("https://user:secret@hooks.example.com/", "must not hold credentials")]
    public async Task ShouldRefuse_WhenTheTargetIsNotAPublicHttpUrl(string url, string expected) =>
        Assert.That(await Policy().CheckAsync(url, default), Does.Contain(expected));

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
}
