using LlmServing.GpuWorker;
using LlmServing.GpuWorker.Inference;
using LlmServing.GpuWorker.Jobs;
using LlmServing.Tests.Infrastructure;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace LlmServing.Tests;

/// <summary>
/// The worker's idle shutdown (scale to zero), no servers: a message that has arrived but not yet reached the scheduler
/// (waiting for a slot, being claimed) keeps the worker up; otherwise it stopped with prefetched messages unacknowledged
/// and the autoscaler started another worker for them.
/// </summary>
public sealed class IdleShutdownTests
{
    private sealed class IdleScheduler : ISchedulerState
    {
        public SchedulerCounters Counters => new();

        public IReadOnlyCollection<Guid> JobIds => [];

        public DateTimeOffset LastBusyAt { get; } = DateTimeOffset.UtcNow.AddMinutes(-1);
    }

    private sealed class Lifetime : IHostApplicationLifetime
    {
        private readonly CancellationTokenSource _stopping = new();

        public CancellationToken ApplicationStarted => CancellationToken.None;

        public CancellationToken ApplicationStopping => _stopping.Token;

        public CancellationToken ApplicationStopped => CancellationToken.None;

        public void StopApplication() => _stopping.Cancel();
    }

    [Test]
    public async Task ShouldNotStop_WhileAMessageIsBeingConsumed_AndStopOnceItIsDone()
    {
        var consuming = new ConsumeActivity();
        var lifetime = new Lifetime();
        var options = Options.Create(new WorkerOptions { IdleTimeout = TimeSpan.FromMilliseconds(300) });
        using var shutdown = new IdleShutdown(new IdleScheduler(), consuming, lifetime, options, NullLogger<IdleShutdown>.Instance);

        var message = consuming.Enter(); // delivered, waiting for a slot: the scheduler has not seen it yet
        await shutdown.StartAsync(CancellationToken.None);
        // Four idle timeouts long: an idle clock that ignored the delivered message would have stopped the worker.
        await Eventually.NeverWithinAsync(() => lifetime.ApplicationStopping.IsCancellationRequested, TimeSpan.FromMilliseconds(1200), "stopped while holding a delivered message");

        var done = System.Diagnostics.Stopwatch.StartNew();
        message.Dispose();
        await Eventually.WaitUntilAsync(() => lifetime.ApplicationStopping.IsCancellationRequested, 10, 10);
        Assert.That(done.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(250)), "the idle time counts from the message's end");
        await shutdown.StopAsync(CancellationToken.None);
    }
}
