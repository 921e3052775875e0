using LLama;
using LLama.Common;
using LLama.Native;
using Microsoft.Extensions.Options;

namespace LlmServing.GpuWorker.Inference;

/// <summary>
/// Owns the model weights: loaded once when the host starts (so a bad model fails start-up, before any message
/// is taken) and freed when it stops.
/// </summary>
public sealed class LlamaModel(IOptions<InferenceOptions> options, ILoggerFactory loggers, ILogger<LlamaModel> logger)
    : IHostedService, IDisposable
{
    private LLamaWeights? _weights;

    public LLamaWeights Weights => _weights ?? throw new InvalidOperationException("The model is not loaded yet.");

    public ModelParams Parameters { get; } = CreateParameters(options.Value);

    /// <summary>Completes when the weights are loaded.</summary>
    public Task Loaded => _loaded.Task;

    private readonly TaskCompletionSource _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var o = options.Value;
        // llama.cpp's own log goes through logging (category "LlamaCpp"), not straight to stderr.
        NativeLogConfig.llama_log_set(loggers.CreateLogger("LlamaCpp"));
        logger.LogInformation(
            "Loading model {Path} (context {Context}, slots {Slots}, threads {Threads}, GPU layers {GpuLayers})",
            o.ModelPath, o.ContextSize, o.Slots, o.EffectiveThreads, o.GpuLayers);
        _weights = await LLamaWeights.LoadFromFileAsync(Parameters, cancellationToken);
        logger.LogInformation(
            "Model loaded: {Name}, {Parameters:N0} parameters, GPU offload supported: {Gpu}",
            _weights.Metadata.GetValueOrDefault("general.name", "?"), _weights.ParameterCount,
            NativeApi.llama_supports_gpu_offload());
        _loaded.TrySetResult();
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void Dispose() => _weights?.Dispose();

    private static ModelParams CreateParameters(InferenceOptions o) => new(o.ModelPath)
    {
        ContextSize = (uint)o.ContextSize,
        BatchSize = (uint)o.BatchSize,
        UBatchSize = (uint)o.BatchSize,
        SeqMax = (uint)(o.Slots + o.MaxCachedPrefixes), // cached prefixes are sequences too
        KVUnified = true,
        Threads = o.EffectiveThreads,
        BatchThreads = o.EffectiveThreads,
        GpuLayerCount = o.GpuLayers,
    };
}
