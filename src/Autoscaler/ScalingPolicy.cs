namespace LlmServing.Autoscaler;

/// <summary>Scaling settings with the meaning of KEDA's RabbitMQ scaler (mode QueueLength).</summary>
public sealed record ScalingSettings
{
    /// <summary>Messages one worker is expected to hold (KEDA <c>value</c>); the worker's slots.</summary>
    public int TargetPerWorker { get; init; } = 8;

    /// <summary>From zero, scale up only when depth exceeds this (KEDA <c>activationValue</c>).</summary>
    public int ActivationThreshold { get; init; }

    public int MinWorkers { get; init; }

    public int MaxWorkers { get; init; } = 4;

    /// <summary>How long the queue must stay inactive before scaling to zero (KEDA <c>cooldownPeriod</c>).</summary>
    public TimeSpan Cooldown { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>
/// Queue depth as the scaler counts it: ready plus unacknowledged messages. Unacknowledged ones are being worked on;
/// counting only ready messages would scale busy workers away.
/// </summary>
public sealed record QueueDepth(long Ready, long Unacknowledged, int Consumers)
{
    public long Total => Ready + Unacknowledged;

    public static QueueDepth operator +(QueueDepth a, QueueDepth b) =>
        new(a.Ready + b.Ready, a.Unacknowledged + b.Unacknowledged, a.Consumers + b.Consumers);
}

/// <summary>What the policy remembers between polls.</summary>
public sealed record ScalingState(DateTimeOffset? LastActiveAt);

public sealed record ScalingDecision(int Desired, string Reason, ScalingState State);

/// <summary>
/// desired = ceil(depth / target per worker), clamped to [max(min, 1), max] while the queue is active (depth above the
/// activation threshold), but never above the running workers while no message is ready (all held); when inactive, the current workers are kept until the queue has been inactive for the
/// cool-down, then <c>min</c> (usually zero). A pure function: the same inputs give the same decision.
/// </summary>
public static class ScalingPolicy
{
    public static ScalingDecision Decide(QueueDepth depth, int running, DateTimeOffset now, ScalingState state, ScalingSettings settings)
    {
        var active = depth.Total > settings.ActivationThreshold;
        var lastActive = active ? now : state.LastActiveAt;
        var next = new ScalingState(lastActive);
        if (active)
        {
            var wanted = (int)Math.Ceiling(depth.Total / (double)Math.Max(1, settings.TargetPerWorker));
            var desired = Math.Clamp(wanted, Math.Max(settings.MinWorkers, 1), Math.Max(settings.MaxWorkers, 1));
            var reason = wanted > settings.MaxWorkers
                ? $"depth {depth.Total} wants {wanted}, capped at max {settings.MaxWorkers}"
                : $"depth {depth.Total} / {settings.TargetPerWorker} per worker = {desired}";
            if (depth.Ready == 0 && desired > running)
            {
                // Every message is held by a running worker: a new one would find nothing to take. (At the tail of a
                // burst, a worker that went idle and exited was otherwise replaced, model load and all, for nothing.)
                return new ScalingDecision(Math.Max(running, settings.MinWorkers),
                    $"depth {depth.Total} is all unacknowledged: the {running} running workers hold it; none added", next);
            }

            return new ScalingDecision(desired, reason, next);
        }

        if (running > settings.MinWorkers && lastActive is { } seen && now - seen < settings.Cooldown)
        {
            return new ScalingDecision(running, $"inactive for {(now - seen).TotalSeconds:F0} s of the {settings.Cooldown.TotalSeconds:F0} s cool-down", next);
        }

        return new ScalingDecision(settings.MinWorkers,
            running == 0 ? $"depth {depth.Total} not above activation {settings.ActivationThreshold}" : "cool-down over: scale to the minimum", next);
    }
}
