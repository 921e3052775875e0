using LlmServing.Autoscaler;
using LlmServing.Contracts;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace LlmServing.Tests;

/// <summary>The autoscaler's settings as configuration binds them. No servers.</summary>
[TestFixture]
public sealed class AutoscalerOptionsTests
{
    [Test]
    public void ShouldWatchOnlyTheConfiguredQueues_NotTheDefaultsAsWell()
    {
        var options = Bind(new Dictionary<string, string?> { ["Autoscaler:Queues:0"] = "tenant-x-jobs", ["Autoscaler:Queues:1"] = "tenant-x-batch" });

        // The configuration binder appends to an array that already has items: with defaults in the initializer, this
        // deployment also scaled on the default queues of any other deployment on the same broker.
        Assert.That(options.Queues, Is.EqualTo(new[] { "tenant-x-jobs", "tenant-x-batch" }));
    }

    [Test]
    public void ShouldWatchTheDefaultQueues_WhenNoneAreConfigured() =>
        Assert.That(Bind([]).Queues, Is.EqualTo(new[] { QueueNames.Jobs, QueueNames.BatchJobs }));

    private static AutoscalerOptions Bind(Dictionary<string, string?> settings)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.AddAutoscaler();
        using var services = builder.Services.BuildServiceProvider();
        return services.GetRequiredService<IOptions<AutoscalerOptions>>().Value;
    }
}
