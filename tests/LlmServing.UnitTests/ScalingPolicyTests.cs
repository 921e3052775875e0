using LlmServing.Autoscaler;

namespace LlmServing.Tests;

/// <summary>The scaling policy (KEDA RabbitMQ semantics) on its edge cases. A pure function: no services needed.</summary>
public sealed class ScalingPolicyTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 28, 0, 0, 0, TimeSpan.Zero);
    private static readonly ScalingSettings Settings = new() { TargetPerWorker = 8, ActivationThreshold = 0, MinWorkers = 0, MaxWorkers = 4, Cooldown = TimeSpan.FromSeconds(60) };

    private static ScalingDecision Decide(long ready, long unacked, int running, ScalingState? state = null, DateTimeOffset? now = null, ScalingSettings? settings = null) =>
        ScalingPolicy.Decide(new QueueDepth(ready, unacked, running), running, now ?? T0, state ?? new ScalingState(null), settings ?? Settings);

    [Test]
    public void ShouldStayAtZero_WhenTheQueueIsEmpty() => Assert.That(Decide(0, 0, 0).Desired, Is.Zero);

    [Test]
    public void ShouldStartOneWorker_WhenTheFirstMessageArrives() => Assert.That(Decide(1, 0, 0).Desired, Is.EqualTo(1));

    [Test]
    public void ShouldNotActivate_WhenDepthIsWithinTheActivationThreshold()
    {
        var settings = Settings with { ActivationThreshold = 5 };

        Assert.That(Decide(5, 0, 0, settings: settings).Desired, Is.Zero);
        Assert.That(Decide(6, 0, 0, settings: settings).Desired, Is.EqualTo(1));
    }

    [TestCase(8, 1)]
    [TestCase(9, 2)]
    [TestCase(24, 3)]
    public void ShouldWantOneWorkerPerTargetMessages_WhenABurstArrives(int depth, int expected) =>
        Assert.That(Decide(depth, 0, 0).Desired, Is.EqualTo(expected));

    [Test]
    public void ShouldCapAtMaxWorkers_WhenTheBurstIsHuge()
    {
        var decision = Decide(1000, 0, 1);

        Assert.That(decision.Desired, Is.EqualTo(4));
        Assert.That(decision.Reason, Does.Contain("capped at max 4"));
    }

    [Test]
    public void ShouldKeepBusyWorkers_WhenAllMessagesAreUnacknowledged()
    {
        // 16 jobs being worked on, none ready: counting only ready messages would say zero workers.
        Assert.That(Decide(0, 16, 2).Desired, Is.EqualTo(2));
    }

    [Test]
    public void ShouldNotAddWorkers_WhenEveryMessageIsHeldByARunningWorker()
    {
        // The tail of a burst: 30 messages in flight on 3 workers, the 4th went idle and exited. A new process would
        // load the model and find nothing to take.
        Assert.That(Decide(0, 30, 3).Desired, Is.EqualTo(3));
        Assert.That(Decide(1, 30, 3).Desired, Is.EqualTo(4), "one ready message is work for another worker");
        Assert.That(Decide(0, 30, 0).Desired, Is.Zero, "messages held by consumers that are not ours");
    }

    [Test]
    public void ShouldWaitForTheCooldown_BeforeScalingToZero()
    {
        var busy = Decide(3, 0, 1, now: T0);
        var justEmpty = Decide(0, 0, 1, busy.State, T0.AddSeconds(10));
        var stillCooling = Decide(0, 0, 1, justEmpty.State, T0.AddSeconds(59));
        var cooled = Decide(0, 0, 1, stillCooling.State, T0.AddSeconds(61));

        Assert.That(justEmpty.Desired, Is.EqualTo(1));
        Assert.That(stillCooling.Desired, Is.EqualTo(1));
        Assert.That(cooled.Desired, Is.Zero);
    }

    [Test]
    public void ShouldNotFlap_WhenTheQueueEmptiesAndRefillsWithinTheCooldown()
    {
        var state = new ScalingState(null);
        var desired = new List<int>();
        for (var second = 0; second < 120; second += 5)
        {
            var depth = second / 5 % 2 == 0 ? 4 : 0; // fills and drains every 5 s
            var d = Decide(depth, 0, 1, state, T0.AddSeconds(second));
            state = d.State;
            desired.Add(d.Desired);
        }

        Assert.That(desired, Is.All.EqualTo(1));
    }

    [Test]
    public void ShouldKeepMinWorkers_WhenMinIsAboveZero() =>
        Assert.That(Decide(0, 0, 0, settings: Settings with { MinWorkers = 1 }).Desired, Is.EqualTo(1));
}
