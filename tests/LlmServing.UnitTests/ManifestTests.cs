using System.Text.RegularExpressions;
using LlmServing.Autoscaler;
using LlmServing.Contracts;
using LlmServing.GpuWorker;
using LlmServing.GpuWorker.Inference;

namespace LlmServing.Tests;

/// <summary>The Kubernetes manifests say what the code says: queue names, slots, thresholds, drain.</summary>
public sealed partial class ManifestTests
{
    private static string Manifest(string name) => File.ReadAllText(Path.GetFullPath(Path.Combine(
        TestContext.CurrentContext.TestDirectory, "../../../../../infra/k8s", name)));

    private static List<string> Values(string yaml, string key) =>
        [.. Regex.Matches(yaml, $@"(?m)^\s*-?\s*{Regex.Escape(key)}:\s*""?([^""\s#]+)""?").Select(m => m.Groups[1].Value)];

    private static string Env(string yaml, string name) =>
        Regex.Match(yaml, $@"name:\s*{Regex.Escape(name)},\s*value:\s*""([^""]*)""").Groups[1].Value;

    [Test]
    public void ShouldScaleOnTheQueuesTheCodeUses_WhenKedaReadsTheManifest()
    {
        var scaled = Manifest("scaledobject.yaml");

        Assert.That(Values(scaled, "queueName"), Is.EquivalentTo(new[] { QueueNames.Jobs, QueueNames.BatchJobs }));
        Assert.That(Values(scaled, "value"), Is.All.EqualTo(new InferenceOptions().Slots.ToString()), "target per worker = the worker's slots");
        Assert.That(Values(scaled, "value"), Is.All.EqualTo(new AutoscalerOptions().TargetPerWorker.ToString()), "same target as the local autoscaler");
        Assert.That(Values(scaled, "protocol"), Is.All.EqualTo("http"), "ready + unacknowledged, not ready only");
        Assert.That(Values(scaled, "minReplicaCount"), Is.EqualTo(new[] { "0" }));
        Assert.That(Values(scaled, "activationValue"), Is.All.EqualTo(new AutoscalerOptions().ActivationThreshold.ToString()));
        Assert.That(scaled, Does.Contain("type: postgresql").And.Contain("queued_at IS NULL AND batch_id IS NOT NULL"),
            "the batch backlog waiting in PostgreSQL counts too (fair share)");
        Assert.That(Values(scaled, "targetQueryValue"), Is.EqualTo(new[] { new AutoscalerOptions().TargetPerWorker.ToString() }));
    }

    [Test]
    public void ShouldMatchTheWorkerOptions_WhenTheWorkerDeploymentIsRead()
    {
        var worker = Manifest("worker.yaml");
        var producer = Manifest("producer.yaml");

        Assert.That(Env(worker, "Worker__JobQueue"), Is.EqualTo(QueueNames.Jobs));
        Assert.That(Env(worker, "Worker__BatchJobQueue"), Is.EqualTo(QueueNames.BatchJobs));
        Assert.That(Env(producer, "Producer__JobQueue"), Is.EqualTo(QueueNames.Jobs));
        Assert.That(Env(producer, "Producer__BatchJobQueue"), Is.EqualTo(QueueNames.BatchJobs));
        Assert.That(Env(worker, "Inference__Slots"), Is.EqualTo(new InferenceOptions().Slots.ToString()));
        Assert.That(Env(worker, "Inference__ContextSize"), Is.EqualTo(Env(producer, "Producer__ContextSize")));
        var grace = int.Parse(Values(worker, "terminationGracePeriodSeconds").Single());
        Assert.That(TimeSpan.Parse(Env(worker, "Worker__DrainTimeout")).TotalSeconds, Is.LessThan(grace), "the drain must end before Kubernetes kills the pod");
        Assert.That(TimeSpan.Parse(Env(worker, "Worker__IdleTimeout")), Is.EqualTo(new WorkerOptions().IdleTimeout), "KEDA scales to zero; pods do not exit on idle");
        Assert.That(Env(worker, "Database__MigrateOnStart"), Is.EqualTo("false"));
        Assert.That(worker, Does.Contain("path: /health/ready").And.Contain("path: /health/live"), "probes on the worker's metrics port");
        Assert.That(Env(worker, "Worker__MetricsPort"), Is.EqualTo("9090"));
        Assert.That(Manifest("migration-job.yaml"), Does.Contain("--migrate-only"));
    }

    [Test]
    public void ShouldRequireAnAdminKeyAndPublishOnlyOnLoopback_WhenDeployedFromTheRepositoryFiles()
    {
        var producer = Manifest("producer.yaml");
        var compose = File.ReadAllText(Path.GetFullPath(Path.Combine(TestContext.CurrentContext.TestDirectory, "../../../../../infra/compose.yaml")));

        Assert.That(Env(producer, "Producer__RequireAdminKey"), Is.EqualTo("true"), "a cluster Producer never runs with the API open");
        Assert.That(Manifest("secrets.yaml"), Does.Match(@"Producer__AdminKey:\s*""""").And.Contain("name: llmserving-admin"));
        Assert.That(producer, Does.Match(@"readinessProbe:\s*httpGet: \{ path: /health/ready,"));
        Assert.That(compose, Does.Contain("Producer__RequireAdminKey: \"true\""));
        var published = Regex.Matches(compose, @"(?m)^\s*ports:\s*\[(.*)\]").SelectMany(m => m.Groups[1].Value.Split(',')).Select(p => p.Trim(' ', '"')).ToList();
        Assert.That(published, Is.Not.Empty);
        Assert.That(published, Is.All.StartWith("127.0.0.1:"), "ports are published on loopback only");
    }
}
