using System.Text.Json;
using LlmServing.Tests.Infrastructure;

namespace LlmServing.Tests;

/// <summary>The API describes itself: an OpenAPI document and an interactive page.</summary>
[TestFixture]
[NonParallelizable]
public sealed class ApiDocumentationTests
{
    private readonly string _queue = $"llm-jobs-test-{TestServices.RunId}-docs";
    private ProducerInstance _producer = null!;

    [OneTimeSetUp]
    public async Task StartAsync() => _producer = await ProducerInstance.StartAsync(_queue);

    [OneTimeTearDown]
    public async Task StopAsync()
    {
        await _producer.DisposeAsync();
        await Broker.DeleteAsync(_queue);
    }

    [Test]
    public async Task ShouldDescribeTheJobsApi_WhenTheOpenApiDocumentIsRequested()
    {
        var document = JsonDocument.Parse(await _producer.Client.GetStringAsync("/openapi/v1.json")).RootElement;

        var paths = document.GetProperty("paths");
        var create = paths.GetProperty("/v1/jobs").GetProperty("post");
        Assert.That(create.GetProperty("responses").TryGetProperty("202", out _), Is.True);
        var schema = create.GetProperty("requestBody").GetProperty("content").GetProperty("application/json").GetProperty("schema");
        Assert.That(schema.GetProperty("properties").TryGetProperty("max_tokens", out _), Is.True);
        Assert.That(schema.GetProperty("properties").TryGetProperty("messages", out _), Is.True);
        Assert.That(paths.TryGetProperty("/v1/jobs/{id}", out _), Is.True);
    }

    [TestCase("/health/live")]
    [TestCase("/health/ready")]
    public async Task ShouldReportHealthy_WhenDatabaseAndBrokerAreUp(string path)
    {
        await _producer.QueueDeclared;
        using var response = await _producer.Client.GetAsync(path);

        Assert.That((int)response.StatusCode, Is.EqualTo(200), await response.Content.ReadAsStringAsync());
    }

    [Test]
    public async Task ShouldServeAnInteractivePage_WhenDocsAreRequested()
    {
        using var response = await _producer.Client.GetAsync("/docs");

        Assert.That((int)response.StatusCode, Is.EqualTo(200));
        Assert.That(response.Content.Headers.ContentType?.MediaType, Is.EqualTo("text/html"));
    }
}
