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

    [Test]
    public async Task ShouldCountPlacesInSequences_WhenAJobAsksForSeveralChoices()
    {
        // Four slots: a job with n = 3 takes three. Counted in messages, a job with n = 2 would be let in (and claimed,
        // its lease ticking) while the scheduler has one slot for it.
        var gate = new SlotGate(4);
        var three = await gate.EnterAsync(interactive: true, 3, CancellationToken.None);
        var two = gate.EnterAsync(interactive: true, 2, CancellationToken.None);
        var one = gate.EnterAsync(interactive: true, 1, CancellationToken.None);

        Assert.That(gate.Free, Is.EqualTo(1));
        Assert.That(two.IsCompleted, Is.False, "two choices do not fit the one free slot");
        Assert.That(one.IsCompleted, Is.False, "no overtaking a request that waits for more places");

        three.Dispose();

        Assert.That(two.IsCompletedSuccessfully && one.IsCompletedSuccessfully, Is.True);
        Assert.That(gate.Free, Is.EqualTo(1));
        (await two).Dispose();
        (await one).Dispose();
        Assert.That(gate.Free, Is.EqualTo(4));
    }

    [Test]
    public async Task ShouldLetTheNextIn_WhenTheRequestHoldingTheLineIsCancelled()
    {
        var gate = new SlotGate(2);
        var held = await gate.EnterAsync(interactive: false, 1, CancellationToken.None);
        using var cts = new CancellationTokenSource();
        var big = gate.EnterAsync(interactive: false, 2, cts.Token);
        var small = gate.EnterAsync(interactive: false, 1, CancellationToken.None);
        Assert.That(small.IsCompleted, Is.False);

        await cts.CancelAsync();

        Assert.That(small.IsCompletedSuccessfully, Is.True, "the free slot goes to the next in line");
        Assert.That(async () => await big, Throws.InstanceOf<OperationCanceledException>());
        held.Dispose();
        (await small).Dispose();
        Assert.That(gate.Free, Is.EqualTo(2));
    }

    [Test]
    public async Task ShouldTakeEveryPlace_WhenAJobAsksForMoreChoicesThanTheWorkerHasSlots()
    {
        var gate = new SlotGate(2);
        using var all = await gate.EnterAsync(interactive: true, 5, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(1));

        Assert.That(gate.Free, Is.Zero, "let in (the scheduler refuses it with its reason), not left waiting forever");
    }
}
