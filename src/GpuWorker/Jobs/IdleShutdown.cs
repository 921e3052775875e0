using LlmServing.GpuWorker.Inference;
using Microsoft.Extensions.Options;

namespace LlmServing.GpuWorker.Jobs;

/// <summary>
/// Scale to zero from the worker's side: once it has held no job for <see cref="WorkerOptions.IdleTimeout"/>, it
/// stops the host (the same graceful path as SIGTERM: stop consuming, drain) and the process exits with code 0.
/// An autoscaler therefore never has to kill a worker to scale down.
/// </summary>
public sealed class IdleShutdown(
    ISchedulerState scheduler,
    ConsumeActivity consuming,
    IHostApplicationLifetime lifetime,
    IOptions<WorkerOptions> options,
    ILogger<IdleShutdown> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var timeout = options.Value.IdleTimeout;
        if (timeout <= TimeSpan.Zero)
        {
            return;
        }

        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(Math.Clamp(timeout.TotalMilliseconds / 4, 50, 1000)));
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            // Busy while the scheduler holds a request, and while a delivered message is on its way to it (waiting for a
            // slot, being claimed) or back (its result being written): a worker must not stop holding prefetched messages.
            var lastBusy = scheduler.LastBusyAt > consuming.LastBusyAt ? scheduler.LastBusyAt : consuming.LastBusyAt;
            var idle = DateTimeOffset.UtcNow - lastBusy;
            if (idle >= timeout)
            {
                logger.LogInformation("No job for {Idle:F1} s (idle timeout {Timeout}); stopping the worker", idle.TotalSeconds, timeout);
                lifetime.StopApplication();
                return;
            }
        }
    }
}

/// <summary>
/// The messages this worker is consuming right now, from delivery to acknowledgement, and when the last one ended; also
/// touched when the job queue's receive endpoint becomes ready, so that the idle clock starts when messages can arrive,
/// not when the model has loaded.
/// </summary>
public sealed class ConsumeActivity
{
    private int _inFlight;
    private long _lastBusyTicks = DateTimeOffset.UtcNow.UtcTicks;

    private long _handled;

    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Messages done with (acknowledged, faulted or sent back) since the worker started.</summary>
    public long Handled => Interlocked.Read(ref _handled);

    public DateTimeOffset LastBusyAt => InFlight > 0 ? DateTimeOffset.UtcNow : new DateTimeOffset(Interlocked.Read(ref _lastBusyTicks), TimeSpan.Zero);

    /// <summary>A message arrived; dispose the result when it is done with (acknowledged, faulted or sent back).</summary>
    public IDisposable Enter()
    {
        Interlocked.Increment(ref _inFlight);
        return new Exit(this);
    }

    public void Touch() => Interlocked.Exchange(ref _lastBusyTicks, DateTimeOffset.UtcNow.UtcTicks);

    private sealed class Exit(ConsumeActivity activity) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                activity.Touch(); // before the count drops, so that an idle check never sees 0 with an old time
                Interlocked.Increment(ref activity._handled);
                Interlocked.Decrement(ref activity._inFlight);
            }
        }
    }

    /// <summary>Starts the idle clock when a receive endpoint is ready to deliver.</summary>
    public sealed class ReadyObserver(ConsumeActivity activity) : MassTransit.IReceiveEndpointObserver
    {
        public Task Ready(MassTransit.ReceiveEndpointReady ready)
        {
            activity.Touch();
            return Task.CompletedTask;
        }

        public Task Stopping(MassTransit.ReceiveEndpointStopping stopping) => Task.CompletedTask;

        public Task Completed(MassTransit.ReceiveEndpointCompleted completed) => Task.CompletedTask;

        public Task Faulted(MassTransit.ReceiveEndpointFaulted faulted) => Task.CompletedTask;
    }
}
