namespace LlmServing.Tests;

/// <summary>Business logic and the model meet only through contracts (DESIGN.md).</summary>
public sealed class LayoutTests
{
    [Test]
    public void ShouldNotReferenceEachOther_WhenProducerAndGpuWorkerAreBuilt()
    {
        var producer = typeof(Producer.ProducerOptions).Assembly;
        var worker = typeof(GpuWorker.WorkerOptions).Assembly;

        Assert.That(producer.GetReferencedAssemblies().Select(a => a.Name), Does.Not.Contain(worker.GetName().Name));
        Assert.That(worker.GetReferencedAssemblies().Select(a => a.Name), Does.Not.Contain(producer.GetName().Name));
        Assert.That(producer.GetReferencedAssemblies().Select(a => a.Name), Does.Not.Contain("LLamaSharp"));
    }

    [Test]
    public void ShouldKnowOnlyTheContracts_WhenTheAutoscalerIsBuilt()
    {
        var names = typeof(Autoscaler.ScalingPolicy).Assembly.GetReferencedAssemblies().Select(a => a.Name).ToList();

        // (Queue names are constants, compiled in: the reference to Contracts may not even appear.)
        Assert.That(names.Where(n => n!.StartsWith("LlmServing.", StringComparison.Ordinal)), Is.SubsetOf(new[] { "LlmServing.Contracts" }));
    }

    [Test]
    public void ShouldStandAlone_WhenTheGrammarLibraryIsBuilt()
    {
        // The grammar code lives in one pure library (not in Contracts, the Producer or the worker): it references no
        // other project of ours and no engine, so the Producer can check grammars without LLamaSharp.
        var names = typeof(Grammar.Gbnf).Assembly.GetReferencedAssemblies().Select(a => a.Name).ToList();

        Assert.That(names.Where(n => n!.StartsWith("LlmServing.", StringComparison.Ordinal) || n!.StartsWith("LLama", StringComparison.Ordinal)), Is.Empty);
        Assert.That(typeof(Contracts.JobStatuses).Assembly.GetTypes().Select(t => t.Name), Has.None.Contains("Gbnf").And.None.Contains("Grammar"));
    }
}
