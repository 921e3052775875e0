using Microsoft.Extensions.Options;
using Prometheus;

namespace LlmServing.Autoscaler;

/// <summary>
/// Polls queue depth, applies <see cref="ScalingPolicy"/> and starts workers up to the desired count. Scaling down
/// is left to the workers, which exit on their idle timeout: no worker is ever killed mid-job.
/// </summary>
public sealed class AutoscalerService(
    QueueDepthProbe probe,
    WorkerLauncher launcher,
    TimeProvider clock,
    IOptions<AutoscalerOptions> options,
    ILogger<AutoscalerService> logger) : BackgroundService
{
    private static readonly Gauge Depth = Metrics.CreateGauge("llmserving_queue_depth", "Messages in the job queues.", "kind");
    private static readonly Gauge Wanted = Metrics.CreateGauge("llmserving_workers_wanted", "Workers the policy wants.");
    private static readonly Gauge Running = Metrics.CreateGauge("llmserving_workers_running", "Worker processes running.");
    private ScalingState _state = new(null);
    private string _last = "";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        using var timer = new PeriodicTimer(o.PollingInterval);
        do
        {
            try
            {
                var depth = await probe.ReadAsync(stoppingToken);
                var running = launcher.Running;
                var decision = ScalingPolicy.Decide(depth, running, clock.GetUtcNow(), _state, o.Settings);
                _state = decision.State;
                Depth.WithLabels("ready").Set(depth.Ready);
                Depth.WithLabels("unacknowledged").Set(depth.Unacknowledged);
                Wanted.Set(decision.Desired);
                Running.Set(running);
                var summary = $"ready {depth.Ready}, unacked {depth.Unacknowledged}, consumers {depth.Consumers}, running {running} -> desired {decision.Desired}";
                if (summary != _last)
                {
                    logger.LogInformation("Scaling decision: {Summary} ({Reason})", summary, decision.Reason);
                    _last = summary;
                }

                for (var i = running; i < decision.Desired; i++)
                {
                    launcher.Start();
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Autoscaler poll failed: {Error}", e.Message);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }
}
