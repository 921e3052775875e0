using System.ComponentModel.DataAnnotations;

namespace LlmServing.GpuWorker.Inference;

/// <summary>Settings of the worker's llama.cpp engine (section <c>Inference</c>). Validated before the model loads.</summary>
public sealed class InferenceOptions : IValidatableObject
{
    public const string Section = "Inference";

    /// <summary>Path of the GGUF model file.</summary>
    [Required]
    public string ModelPath { get; set; } = "";

    /// <summary>KV cache size in tokens, shared by all sequences (unified KV).</summary>
    [Range(128, 1 << 20)]
    public int ContextSize { get; set; } = 4096;

    /// <summary>Sequences decoded together; also the broker prefetch and the consumer concurrency.</summary>
    [Range(1, 256)]
    public int Slots { get; set; } = 8;

    /// <summary>
    /// CPU threads for decoding; 0 means all cores but one. llama.cpp's threads wait on each other every step, so a
    /// thread that the API, RabbitMQ or PostgreSQL preempts stalls them all: on 2 shared cores one decode thread gave
    /// more end-to-end throughput than two (docs/benchmarks-1-thread.md). Set it to the core count on a dedicated box.
    /// </summary>
    [Range(0, 1024)]
    public int Threads { get; set; }

    /// <summary>Largest number of tokens submitted to one <c>llama_decode</c> (prefill chunks share it with decodes).</summary>
    [Range(16, 1 << 16)]
    public int BatchSize { get; set; } = 512;

    /// <summary>Layers offloaded to the GPU (CUDA build); 0 on CPU.</summary>
    [Range(0, 1024)]
    public int GpuLayers { get; set; }

    /// <summary>
    /// Prompts kept in the KV cache for reuse by later requests that share a prefix with them (a fork of the cached
    /// sequence; only the rest is prefilled). 0 turns prefix reuse off. Each entry counts against <see cref="ContextSize"/>
    /// and is evicted, least recently used first, when a new request needs its cells.
    /// </summary>
    [Range(0, 64)]
    public int MaxCachedPrefixes { get; set; } = 4;

    /// <summary>Shortest shared prefix, in tokens, worth reusing (shorter ones are prefilled again).</summary>
    [Range(1, 1 << 20)]
    public int MinPrefixTokens { get; set; } = 32;

    /// <summary>How often a failed decode is retried for the same job (after rebuilding the executor) before it fails.</summary>
    [Range(0, 10)]
    public int MaxDecodeRetries { get; set; } = 2;

    /// <summary>
    /// How often the text of running interactive jobs is reported for streaming (written to the job row, which wakes
    /// the Producer's streams); zero turns it off (streams then get the whole text at the end). Batch lines never are.
    /// </summary>
    public TimeSpan ProgressInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// <c>Continuous</c> (default): a request joins as soon as a slot and KV cells are free. <c>Static</c>: a batch
    /// is filled, run until its last sequence ends, then the next one starts; kept to measure the difference.
    /// </summary>
    public SchedulingMode Scheduling { get; set; } = SchedulingMode.Continuous;

    public int EffectiveThreads => Threads > 0 ? Threads : Math.Max(1, Environment.ProcessorCount - 1);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (!string.IsNullOrWhiteSpace(ModelPath) && !File.Exists(ModelPath))
        {
            yield return new ValidationResult(
                $"Inference:ModelPath '{ModelPath}' does not exist. Generate the test model with " +
                "'dotnet run --project src/ModelGen -- --out models/random-tiny.gguf' or point it at a GGUF file.",
                [nameof(ModelPath)]);
        }
    }
}

public enum SchedulingMode
{
    Continuous,
    Static,
}
