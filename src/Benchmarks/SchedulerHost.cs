using LlmServing.GpuWorker.Inference;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace LlmServing.Benchmarks;

/// <summary>The worker's model and batch scheduler in this process, without broker or database.</summary>
public sealed class SchedulerHost : IAsyncDisposable
{
    private readonly LlamaModel _model;

    private SchedulerHost(LlamaModel model, BatchScheduler scheduler)
    {
        _model = model;
        Scheduler = scheduler;
    }

    public BatchScheduler Scheduler { get; }

    public static async Task<SchedulerHost> StartAsync(InferenceOptions options)
    {
        var wrapped = Options.Create(options);
        var model = new LlamaModel(wrapped, NullLoggerFactory.Instance, NullLogger<LlamaModel>.Instance);
        await model.StartAsync(CancellationToken.None);
        var scheduler = new BatchScheduler(model, wrapped, [], [], [], NullLogger<BatchScheduler>.Instance);
        await scheduler.StartAsync(CancellationToken.None);
        return new SchedulerHost(model, scheduler);
    }

    public async ValueTask DisposeAsync()
    {
        await Scheduler.StopAsync(CancellationToken.None);
        Scheduler.Dispose();
        _model.Dispose();
    }
}
