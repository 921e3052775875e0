using LlmServing.GpuWorker.Jobs;

namespace LlmServing.Tests;

/// <summary>The worker's slot gate: pure logic, no servers.</summary>
public sealed class SlotGateTests
{
    [Test]
    public async Task ShouldLetInOnlyAsManyAsThereAreSlots_WhenMoreArrive()
    {
        var gate = new SlotGate(2);
        using var a = await gate.EnterAsync(interactive: false, CancellationToken.None);
        using var b = await gate.EnterAsync(interactive: false, CancellationToken.None);
        var c = gate.EnterAsync(interactive: false, CancellationToken.None);

        Assert.That(c.IsCompleted, Is.False);
        a.Dispose();
        Assert.That(await c.WaitAsync(TimeSpan.FromSeconds(1)), Is.Not.Null);
        Assert.That(gate.Free, Is.Zero);
    }

    [Test]
    public async Task ShouldGiveAFreedSlotToAnInteractiveJob_WhenBatchLinesWaitedLonger()
    {
        var gate = new SlotGate(1);
        var held = await gate.EnterAsync(interactive: false, CancellationToken.None);
        var batch = gate.EnterAsync(interactive: false, CancellationToken.None);
        var interactive = gate.EnterAsync(interactive: true, CancellationToken.None);

        held.Dispose();

        Assert.That(interactive.IsCompletedSuccessfully, Is.True);
        Assert.That(batch.IsCompleted, Is.False);
        (await interactive).Dispose();
        Assert.That(batch.IsCompletedSuccessfully, Is.True);
    }

    [Test]
    public async Task ShouldNotLoseTheSlot_WhenAWaiterIsCancelled()
    {
        var gate = new SlotGate(1);
        var held = await gate.EnterAsync(interactive: true, CancellationToken.None);
        using var cts = new CancellationTokenSource();
        var waiting = gate.EnterAsync(interactive: false, cts.Token);

        await cts.CancelAsync();
        Assert.That(async () => await waiting, Throws.InstanceOf<OperationCanceledException>());
        held.Dispose();
        held.Dispose(); // a second dispose gives nothing back twice

        Assert.That(gate.Free, Is.EqualTo(1));
    }

    [Test]
    public void ShouldNotJumpAheadOfWaitingInteractiveJobs_WhenABatchLineArrivesAtAFreeSlot()
    {
        var gate = new SlotGate(1);
        var first = gate.EnterAsync(interactive: true, CancellationToken.None);
        var queuedInteractive = gate.EnterAsync(interactive: true, CancellationToken.None);

        Assert.That(first.IsCompletedSuccessfully, Is.True);
        Assert.That(queuedInteractive.IsCompleted, Is.False);
    }
}
