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

    /// <summary>Name recorded on the jobs this worker claims.</summary>
    [Required]
    public string WorkerId { get; set; } = $"{Environment.MachineName}:{Environment.ProcessId}";
}
