using System.ComponentModel.DataAnnotations;
using LlmServing.Contracts;

namespace LlmServing.Autoscaler;

/// <summary>Settings of the local autoscaler (section <c>Autoscaler</c>).</summary>
public sealed class AutoscalerOptions
{
    public const string Section = "Autoscaler";

    /// <summary>
    /// Queues whose depths add up (interactive and batch); none configured means <see cref="DefaultQueues"/>. Not an
    /// initializer: the configuration binder appends configured items to an array that already has some.
    /// </summary>
    public string[] Queues { get; set; } = [];

    public static readonly string[] DefaultQueues = [QueueNames.Jobs, QueueNames.BatchJobs];

    /// <summary>RabbitMQ management API (ready and unacknowledged counts need it; AMQP only reports ready).</summary>
    [Required]
    public string ManagementUrl { get; set; } = "http://guest:guest@127.0.0.1:15672/";

    public string VirtualHost { get; set; } = "/";

    /// <summary>AMQP address for exact ready counts (empty: management API only).</summary>
    public string AmqpUrl { get; set; } = "amqp://guest:guest@127.0.0.1:5672/";

    [Range(typeof(TimeSpan), "00:00:00.100", "00:10:00")]
    public TimeSpan PollingInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// PostgreSQL, to count the batch lines that wait there for their tenant's window (ADR 0007): they are work the
    /// broker does not show yet. Empty: only the broker's depth counts.
    /// </summary>
    public string BacklogConnectionString { get; set; } = "";

    [Range(1, 10_000)]
    public int TargetPerWorker { get; set; } = 8;

    [Range(0, 1_000_000)]
    public int ActivationThreshold { get; set; }

    [Range(0, 1024)]
    public int MinWorkers { get; set; }

    [Range(1, 1024)]
    public int MaxWorkers { get; set; } = 4;

    [Range(typeof(TimeSpan), "00:00:00", "1.00:00:00")]
    public TimeSpan Cooldown { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>The worker program and its arguments (default: the built worker next to this repository).</summary>
    [Required]
    public string WorkerCommand { get; set; } = "dotnet";

    public string WorkerArguments { get; set; } = "";

    /// <summary>Idle timeout given to started workers (they leave by idling out; the autoscaler never kills one).</summary>
    public TimeSpan WorkerIdleTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>GPU indexes, one worker per GPU via CUDA_VISIBLE_DEVICES (empty: no GPU pinning).</summary>
    public string[] Gpus { get; set; } = [];

    /// <summary>Extra environment for started workers (connection strings, model path...).</summary>
    public Dictionary<string, string> WorkerEnvironment { get; set; } = [];

    public ScalingSettings Settings => new()
    {
        TargetPerWorker = TargetPerWorker, ActivationThreshold = ActivationThreshold, MinWorkers = MinWorkers,
        MaxWorkers = Gpus.Length > 0 ? Math.Min(MaxWorkers, Gpus.Length) : MaxWorkers, Cooldown = Cooldown,
    };
}
