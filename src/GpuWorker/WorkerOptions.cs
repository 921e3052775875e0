using System.ComponentModel.DataAnnotations;
using LlmServing.Contracts;

namespace LlmServing.GpuWorker;

/// <summary>Settings of the worker process (section <c>Worker</c>).</summary>
public sealed class WorkerOptions
{
    public const string Section = "Worker";

    /// <summary>Queue this worker consumes; the Producer must send to the same one.</summary>
    [Required]
    public string JobQueue { get; set; } = QueueNames.Jobs;

    /// <summary>Queue of batch lines this worker also consumes (at lower priority).</summary>
    [Required]
    public string BatchJobQueue { get; set; } = QueueNames.BatchJobs;

    /// <summary>Name recorded on the jobs this worker claims.</summary>
    [Required]
    public string WorkerId { get; set; } = $"{Environment.MachineName}:{Environment.ProcessId}";

    /// <summary>
    /// How long a claim holds without renewal. The worker renews the leases of the jobs it holds every quarter of
    /// this; a job whose lease lapses (the worker is gone, or lost the job) is requeued by the Producer's reaper.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:01", "01:00:00")]
    public TimeSpan JobLease { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// Longest wait of a received message for a free sequence slot; then it goes back to the end of its queue. Keep it
    /// well under RabbitMQ's <c>consumer_timeout</c> (30 min by default), past which the broker closes the channel and
    /// redelivers every message on it, running ones included.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:01", "01:00:00")]
    public TimeSpan MaxSlotWait { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How often the worker checks whether its running jobs were cancelled.</summary>
    [Range(typeof(TimeSpan), "00:00:00.050", "00:01:00")]
    public TimeSpan CancelPollInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// On SIGTERM the worker stops taking messages and lets running jobs finish for this long; what is still running
    /// then is dropped and its message returned to the queue, to run on another worker.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00", "01:00:00")]
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Scale to zero: after this long without any job the worker stops taking messages and exits with code 0.
    /// Zero (the default) keeps it running; the autoscaler and the Kubernetes manifests set it.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00", "1.00:00:00")]
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.Zero;

    /// <summary>
    /// A job claimed this many times without finishing (the engine threw, or workers died running it) is failed
    /// with the reason instead of being run again: a poison job must not go round forever.
    /// </summary>
    [Range(1, 100)]
    public int MaxAttempts { get; set; } = 3;

    /// <summary>Port of the worker's Prometheus <c>/metrics</c>; 0 turns it off.</summary>
    [Range(0, 65535)]
    public int MetricsPort { get; set; }
}
